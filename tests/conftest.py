"""Offline, deterministic test environment: no Hub, temp HF cache, tiny random ViT/DeiT models."""

import os
import tempfile

_HF_HOME = tempfile.mkdtemp(prefix="p3b_hf_test_home_")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HOME", _HF_HOME)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    BeitConfig,
    BeitForImageClassification,
    DeiTConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    Dinov2Config,
    Dinov2ForImageClassification,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersForImageClassification,
    IJepaConfig,
    IJepaForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

TINY = dict(
    hidden_size=48,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=96,
    image_size=32,
    patch_size=8,
    num_labels=7,
)


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial LayerNorm / bias values, so that masking tests can actually fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layernorm" in name or "token" in name:
                p.copy_(
                    torch.randn(p.shape, generator=g) * 0.5
                    + (1.0 if "layernorm" in name and name.endswith("weight") else 0.0)
                )
    return model.eval()


@pytest.fixture
def tiny_vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    return _randomise(ViTForImageClassification(ViTConfig(**TINY)), 0)


@pytest.fixture
def tiny_deit_teacher() -> DeiTForImageClassificationWithTeacher:
    torch.manual_seed(1)
    return _randomise(DeiTForImageClassificationWithTeacher(DeiTConfig(**TINY)), 1)


@pytest.fixture
def tiny_deit() -> DeiTForImageClassification:
    torch.manual_seed(2)
    return _randomise(DeiTForImageClassification(DeiTConfig(**TINY)), 2)


def _randomise_family(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """BEiT / DINOv2: also layer scales (constant at init), relative position bias tables and absolute
    positions (zero at init), every norm -- so that slicing them wrongly changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lambda" in name:
                p.copy_(torch.rand(p.shape, generator=g) + 0.25)
            elif name.endswith("bias") or "norm" in name or "token" in name or "position" in name:
                p.copy_(
                    torch.randn(p.shape, generator=g) * 0.5
                    + (1.0 if "norm" in name and name.endswith("weight") else 0.0)
                )
    return model.eval()


#: BEiT-B/16 layout in miniature: per-layer relative position bias, layer scale, mean pooling, no absolute
#: positions, no mask token (microsoft/beit-base-patch16-224)
TINY_BEIT = dict(
    TINY,
    use_relative_position_bias=True,
    use_mean_pooling=True,
    layer_scale_init_value=0.1,
    drop_path_rate=0.1,
)
#: the other BEiT layout: shared relative position bias, absolute positions, mask token, CLS pooling
TINY_BEIT_SHARED = dict(
    TINY,
    use_shared_relative_position_bias=True,
    use_absolute_position_embeddings=True,
    use_mask_token=True,
    use_mean_pooling=False,
    layer_scale_init_value=0.1,
)
TINY_DINOV2 = dict({k: v for k, v in TINY.items() if k != "intermediate_size"}, mlp_ratio=2)
#: DINOv2 with 2 register tokens (between CLS and the patches; the classifier's patch mean skips them)
TINY_DINOV2_REGISTERS = dict(TINY_DINOV2, num_register_tokens=2)
#: DINOv2-giant's SwiGLU MLP in miniature (gate / up / down, (int(48*2*2/3)+7)//8*8 = 64 hidden units)
TINY_DINOV2_SWIGLU = dict(TINY_DINOV2, use_swiglu_ffn=True)


@pytest.fixture
def tiny_beit() -> BeitForImageClassification:
    torch.manual_seed(3)
    return _randomise_family(BeitForImageClassification(BeitConfig(**TINY_BEIT)), 3)


@pytest.fixture
def tiny_beit_shared() -> BeitForImageClassification:
    torch.manual_seed(4)
    return _randomise_family(BeitForImageClassification(BeitConfig(**TINY_BEIT_SHARED)), 4)


@pytest.fixture
def tiny_dinov2() -> Dinov2ForImageClassification:
    torch.manual_seed(5)
    return _randomise_family(Dinov2ForImageClassification(Dinov2Config(**TINY_DINOV2)), 5)


@pytest.fixture
def tiny_dinov2_swiglu() -> Dinov2ForImageClassification:
    """A gated (SwiGLU) MLP: one hidden unit is a (gate row, up row, down column) triple."""
    torch.manual_seed(7)
    return _randomise_family(Dinov2ForImageClassification(Dinov2Config(**TINY_DINOV2_SWIGLU)), 7)


@pytest.fixture
def tiny_dinov2_registers() -> Dinov2WithRegistersForImageClassification:
    torch.manual_seed(6)
    model = Dinov2WithRegistersForImageClassification(Dinov2WithRegistersConfig(**TINY_DINOV2_REGISTERS))
    return _randomise_family(model, 6)


@pytest.fixture
def tiny_clip() -> torch.nn.Module:
    """Stock ``CLIPForImageClassification`` (nested ``CLIPConfig``; quick-GELU, pre-LN on the embeddings)."""
    from transformers import CLIPConfig, CLIPForImageClassification

    torch.manual_seed(6)
    vision = {k: v for k, v in TINY.items() if k != "num_labels"}
    model = CLIPForImageClassification(CLIPConfig(vision_config=vision, num_labels=TINY["num_labels"]))
    return _randomise_family(model, 6)


@pytest.fixture
def tiny_ijepa() -> IJepaForImageClassification:
    """I-JEPA: no CLS token, the classifier reads the mean of the normalised patch tokens."""
    torch.manual_seed(6)
    return _randomise_family(IJepaForImageClassification(IJepaConfig(**TINY)), 6)


@pytest.fixture
def tiny_clip_full(tiny_clip: torch.nn.Module) -> torch.nn.Module:
    """``tiny_clip`` in its full-width pruned format (what load_model / the CLI hand to the methods)."""
    from p3b_hf.models.families import prunable

    return prunable(tiny_clip)


@pytest.fixture
def tiny_siglip() -> torch.nn.Module:
    """Stock ``SiglipForImageClassification`` (nested ``SiglipConfig``; no CLS token, tanh-GELU, post-LN on every
    token, the classifier reads the patch mean; the vision tower's MAP head is not read)."""
    from transformers import SiglipConfig, SiglipForImageClassification

    torch.manual_seed(8)
    vision = {k: v for k, v in TINY.items() if k != "num_labels"}
    text = {"vocab_size": 49408}  # (the text tower is never built; its default token ids fit this vocabulary)
    model = SiglipForImageClassification(
        SiglipConfig(vision_config=vision, text_config=text, num_labels=TINY["num_labels"])
    )
    return _randomise_family(model, 8)


@pytest.fixture
def tiny_siglip_full(tiny_siglip: torch.nn.Module) -> torch.nn.Module:
    """``tiny_siglip`` in its full-width pruned format (what load_model / the CLI hand to the methods)."""
    from p3b_hf.models.families import prunable

    return prunable(tiny_siglip)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on 2 shared cores: one torch thread is far faster than two contending ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
