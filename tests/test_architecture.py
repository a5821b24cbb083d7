"""The package's shape: no import cycles, dependencies pointing one way, self-contained model files, flags
declared once, and a new pruning method is one options dataclass + one run function + one registry line
(docs/architecture.md). README code blocks: tests/test_readme.py.

Imports are read from the source (``ast``), every ``import`` statement counted -- also the ones inside
functions, which would otherwise hide a cycle until run time.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from p3b_hf.errors import P3BError

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "p3b_hf"

#: higher layers may import lower ones, never the other way (docs/architecture.md)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("models", ("p3b_hf.models", "p3b_hf.errors")),
    (
        "core",
        (
            "p3b_hf.plan",
            "p3b_hf.slicing",
            "p3b_hf.cost",
            "p3b_hf.options",
            "p3b_hf.padding",
            "p3b_hf.runtime",
        ),
    ),
    (
        "services",
        (
            "p3b_hf.checkpoints",
            "p3b_hf.loading",
            "p3b_hf.report",
            "p3b_hf.data",
            "p3b_hf.transforms",
            "p3b_hf.training",
            "p3b_hf.trainer_adapter",
            "p3b_hf.optimize",
            "p3b_hf.bench",
            "p3b_hf.hub",
            "p3b_hf.demo_data",
            "p3b_hf.export",
            "p3b_hf.latency",
        ),
    ),
    ("methods", ("p3b_hf.methods",)),
    ("run", ("p3b_hf.runner", "p3b_hf.compare", "p3b_hf.trainer")),
    ("commands", ("p3b_hf.commands", "p3b_hf.cli", "p3b_hf.__main__")),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _resolve(
    current: str, is_pkg: bool, node: ast.ImportFrom | ast.Import, modules: dict[str, Path]
) -> set[str]:
    """The p3b_hf modules an import statement loads (``from . import x`` -> the submodule ``x`` if any)."""
    out: set[str] = set()
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = current if is_pkg else current.rsplit(".", 1)[0]
        for _ in range(node.level - 1):
            base = base.rsplit(".", 1)[0]
        prefix = (
            (base + "." + node.module)
            if node.level and node.module
            else (base if node.level else node.module)
        )
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names]
    for name in names:
        while name and name not in modules:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        if name.startswith("p3b_hf"):
            out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        deps: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                deps |= _resolve(name, path.name == "__init__.py", node, modules)
        # the package facade (p3b_hf/__init__: version + public API) may be imported by anyone for __version__
        graph[name] = {d for d in deps if d != name and d != "p3b_hf"}
    return graph


def _layer(module: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(
        f"{module} is in no layer of tests/test_architecture.py: add it there and to docs/architecture.md"
    )


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if state.get(dep) is None:
                visit(dep)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if state.get(module) is None:
            visit(module)


def test_dependencies_point_one_way() -> None:
    upward = [
        f"{m} ({LAYERS[_layer(m)][0]}) imports {d} ({LAYERS[_layer(d)][0]})"
        for m, deps in _graph().items()
        if m != "p3b_hf"
        for d in deps
        if _layer(d) > _layer(m)
    ]
    assert not upward, "\n".join(upward)


def test_the_model_files_are_self_contained() -> None:
    """The pushed code files import torch / transformers and each other only (remote code has no p3b_hf)."""
    for path in (PKG / "models").glob("*_p3b_*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert (node.module or "").startswith(("configuration_p3b", "modeling_p3b")), (
                    path.name,
                    node.module,
                )
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                assert not mod.startswith("p3b_hf"), (path.name, mod)


# ------------------------------------------------------------------------------------------- docs
def _code_blocks(path: Path, lang: str = "python") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def test_architecture_example_method_runs(tmp_path: Path) -> None:
    """docs/architecture.md's complete example method: registered, then run through the runner (the same
    path ``p3b-hf prune --method uniform-l1`` takes), and it prunes what it says."""
    from test_recipes import _tiny_data, _tiny_dense

    from p3b_hf import methods
    from p3b_hf.options import DataOptions, OutputOptions, PruneOptions, TrainOptions
    from p3b_hf.runner import PruneJob, prune

    (example,) = [b for b in _code_blocks(ROOT / "docs" / "architecture.md") if "register_method" in b]
    assert len(example.strip().splitlines()) <= 40
    namespace: dict = {}
    exec(compile(example, "docs/architecture.md", "exec"), namespace)  # noqa: S102 - the doc's own code
    try:
        options_cls = namespace["UniformL1Options"]
        data, (dense_dir, dense) = _tiny_data(tmp_path), _tiny_dense(tmp_path)
        result = prune(
            PruneJob(
                prune=PruneOptions(model=str(dense_dir), method="uniform-l1"),
                data=DataOptions(dataset=str(data), augment="none", mixup=0, cutmix=0),
                output=OutputOptions(output_dir=str(tmp_path / "out")),
                train=TrainOptions(epochs=1, batch_size=16, device="cpu"),
                method_options=options_cls(keep=0.5),
            )
        )
        widths = result.report["widths"]
        assert [w["mlp"] for w in widths] == [32] * 3  # half of every layer's 64 MLP neurons
        kept = result.report["plan_meta"]["kept_rows"]
        from p3b_hf.models import locate

        fc1 = locate(dense).layers[0].fc1.weight.detach().abs().sum(1)
        assert kept[0] == sorted(fc1.topk(32).indices.tolist())  # the largest L1 rows of layer 0
        assert (tmp_path / "out" / "model.safetensors").exists()
        # its traits: plain families only, no distillation, parameter budgets only
        from transformers import SwinConfig

        from p3b_hf.errors import OptionsError, UnsupportedModelError
        from p3b_hf.runner import check_given_options

        method = methods.get_method("uniform-l1")
        assert (method.traits.families, method.traits.kd, method.traits.budgets) == (
            {"plain"},
            "none",
            {"params"},
        )
        with pytest.raises(
            UnsupportedModelError,
            match=r"^--method uniform-l1 is defined for plain ViT blocks .*"
            r"which p3b_hf prunes with --method vbp or --method global\.",
        ):
            methods.require_family_kind(method, SwinConfig())
        with pytest.raises(
            OptionsError, match="^--teacher is not used by --method uniform-l1: it does not distil"
        ):
            check_given_options("uniform-l1", {"teacher"})
        # A second registration under a taken name is refused (built-in names included), unless meant.
        with pytest.raises(P3BError, match="already registered"):
            methods.register_method("uniform-l1", options_cls, namespace["run"])
        with pytest.raises(P3BError, match="already registered"):
            methods.register_method("vbp", options_cls, namespace["run"])
        assert (
            methods.register_method("uniform-l1", options_cls, namespace["run"], replace=True).run
            is namespace["run"]
        )
        assert methods.METHODS["vbp"] == "p3b_hf.methods.vbp"
    finally:
        methods.METHODS.pop("uniform-l1", None)


def test_prune_help_declares_each_flag_once() -> None:
    """``p3b-hf prune --help``: every method's flags in its own group, no flag twice (argparse would raise)."""
    from p3b_hf.cli import build_parser

    parser = build_parser("prune")
    prune = parser._subparsers._group_actions[0].choices["prune"]
    flags = [s for a in prune._actions for s in a.option_strings]
    assert len(flags) == len(set(flags))
    titles = [g.title for g in prune._action_groups]
    assert any(t.startswith("--method p3b") for t in titles) and any(
        t.startswith("--method vbp") for t in titles
    )


@pytest.mark.parametrize("command", ["prune", "finetune", "compare"])
def test_generated_flags_round_trip_to_the_same_options(command: str) -> None:
    """Defaults parsed from an (almost) empty command line equal the dataclass defaults: the CLI adds nothing."""
    import dataclasses

    from p3b_hf.cli import build_parser
    from p3b_hf.options import DataOptions, KDOptions, TrainOptions, options_from_namespace

    required = {
        "prune": ["--model", "m", "--dataset", "d", "--output-dir", "o"],
        "finetune": ["--model", "m", "--dataset", "d", "--output-dir", "o"],
        "compare": ["--model", "m", "--dataset", "d", "--output-dir", "o"],
    }[command]
    args = build_parser(command).parse_args([command, *required])
    assert options_from_namespace(DataOptions, args) == DataOptions(dataset="d")
    train = options_from_namespace(TrainOptions, args)
    if command == "finetune":
        assert (train.epochs, train.batch_size, train.lr) == (300.0, 128, None)
        assert options_from_namespace(KDOptions, args).kd_reduction is None  # FineTuneTrainer: DeiT's scale
    else:
        assert train == TrainOptions()
        assert dataclasses.asdict(options_from_namespace(KDOptions, args)) == dataclasses.asdict(KDOptions())


#: family names as string literals, model_type comparisons, the pruned classes' module names
_FAMILY_NAMES = re.compile(
    r'"(vit|deit|beit|dinov2|swin|convnext|clip)"|model_type ==|model_type in|p3b_(vit|deit|beit|dinov2|swin|convnext|clip)'
)
#: "deit" that is not the family: DeiT's augmentation recipe (--augment deit) and KD loss scaling (--kd-reduction)
_RECIPE_DEIT = {
    "p3b_hf/transforms.py",
    "p3b_hf/training.py",
    "p3b_hf/options.py",
    "p3b_hf/data/transformed.py",
    "p3b_hf/methods/p3b/trainer.py",
}


def test_no_generic_module_names_a_family() -> None:
    """Family knowledge lives in the family records (p3b_hf/models/families/, docs/architecture.md "Add a model
    family"): outside p3b_hf/models/ no module compares against a family name or imports a family's model file
    (the one exception: the name of DeiT's augmentation / KD recipe)."""
    hits = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("p3b_hf/models/"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in _FAMILY_NAMES.finditer(line):
                if m.group(0) == '"deit"' and rel in _RECIPE_DEIT:
                    continue
                hits.append(f"{rel}:{n}: {line.strip()}")
    assert hits == [], "\n".join(hits)


def test_no_merge_conflict_markers_in_tracked_files() -> None:
    """A merge that committed ``<<<<<<<`` / ``>>>>>>>`` lines (it happened once, in docs/architecture.md) would
    ship broken docs or code; every tracked text file is checked."""
    import subprocess

    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    marker = re.compile(r"^(<{7} |>{7} |={7}$)", re.M)
    bad = []
    for name in files:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".sh", ".json", ".cfg"}:
            continue
        if path.is_file() and marker.search(path.read_text(errors="replace")):
            bad.append(name)
    assert bad == []


#: string literals outside p3b_hf/methods/ that equal a method name but dispatch on nothing: ``bench``'s random
#: plan style "p3b" (a plan shaped like P3B's output: every head, per-layer head dims and MLP widths)
_METHOD_NAME_ALLOWED = {("p3b_hf/bench.py", "p3b"), ("p3b_hf/commands/bench.py", "p3b")}


def _method_labels() -> set[str]:
    from p3b_hf.methods import all_methods

    return {label for m in all_methods() for label in (m.name, *m.compare_labels())}


def _str_constants(node: ast.AST) -> list[str]:
    """The string constants of a comparison operand (a literal, or a tuple / list / set / dict of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [v for e in node.elts for v in _str_constants(e)]
    if isinstance(node, ast.Dict):
        return [v for k in node.keys if k is not None for v in _str_constants(k)]
    return []


def test_no_module_outside_the_methods_compares_a_method_name() -> None:
    """What a method is (post-training? KD? budgets? family kinds? its compare labels) is its declared
    ``MethodTraits`` (docs/architecture.md "Adding a pruning method"): outside p3b_hf/methods/ no module compares
    against a method name (``== "vbp"``, ``in ("p3b", ...)``, ``.startswith("global-")``, ``match``), so a
    plug-in method is compared, refused and reported like a built-in one. Default values (``method="p3b"``)
    and prose are not comparisons."""
    labels = _method_labels()
    prefixes = {label.split("-", 1)[0] + "-" for label in labels if "-" in label}
    hits = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("p3b_hf/methods/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            found: list[str] = []
            if isinstance(node, ast.Compare):
                for operand in (node.left, *node.comparators):
                    found += [v for v in _str_constants(operand) if v.lower() in labels]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in {"startswith", "endswith", "removeprefix"}:
                    found += [v for a in node.args for v in _str_constants(a) if v in labels | prefixes]
            elif isinstance(node, ast.MatchValue):
                found += [v for v in _str_constants(node.value) if v in labels]
            hits += [f"{rel}:{node.lineno}: {v!r}" for v in found if (rel, v) not in _METHOD_NAME_ALLOWED]
    assert hits == [], "a method name outside p3b_hf/methods/ (declare a trait instead):\n" + "\n".join(hits)


def test_method_traits_drive_compare_and_the_errors(tmp_path: Path) -> None:
    """A plug-in's traits act like a built-in's: a post-training plug-in starts from the dense cell and gets it
    as its KD teacher, its own compare labels parse, a budget it does not declare is refused, a family kind it
    does not prune is one UnsupportedModelError generated from the traits (naming the methods that do)."""
    from dataclasses import dataclass

    from p3b_hf import methods
    from p3b_hf.compare import CompareJob, CompareOptions, MethodSpec, cell_job, parse_methods
    from p3b_hf.errors import UnsupportedModelError
    from p3b_hf.options import DataOptions, OutputOptions

    @dataclass
    class Opts:
        keep: float = 0.5
        strength: int = 1
        my_epochs: float = 1.0

    def run(ctx, opts):  # never reached here
        raise AssertionError

    try:
        m = methods.register_method(
            "late-l1",
            Opts,
            run,
            post_training=True,
            budgets={"params", "channels"},
            families={"staged"},
            epochs_option="my_epochs",
            compare_labels={"late-l1": {}, "late-l1-strong": {"strength": 3}},
        )
        assert m.traits.kd == "input" and m.traits.budgets == frozenset({"params", "channels"})
        spec = MethodSpec.parse("late-l1-strong")
        assert (spec.method, spec.overrides, spec.start()) == ("late-l1", (("strength", 3),), "dense")
        job = CompareJob(
            compare=CompareOptions(model="src"),
            data=DataOptions(dataset="d"),
            output=OutputOptions(output_dir=str(tmp_path)),
        )
        cell = cell_job(job, spec, 0.5, tmp_path / "c", "cmp/dense")
        assert cell.kd.teacher == "cmp/dense" and cell.method_options == Opts(
            strength=3, my_epochs=job.train.epochs
        )
        with pytest.raises(P3BError, match="Unknown method 'late-l1-weak'.*late-l1-strong"):
            parse_methods("late-l1-weak")
        # --budget channels: global-* and the plug-in, not p3b / vbp (their traits lack it)
        from p3b_hf.compare import _cells

        bad = CompareJob(
            compare=CompareOptions(model="src", methods="late-l1,vbp", budget="channels"),
            data=DataOptions(dataset="d"),
            output=OutputOptions(output_dir=str(tmp_path / "x")),
        )
        with pytest.raises(
            P3BError, match=r"applies to global-\*, late-l1, late-l1-strong cells only, not vbp;"
        ):
            _cells(bad)
        # P3B (plain only) on a staged config, the plug-in (staged only) on a plain one
        from transformers import SwinConfig, ViTConfig

        with pytest.raises(UnsupportedModelError) as err:
            methods.require_family_kind(methods.get_method("p3b"), SwinConfig())
        assert "P3B is defined for plain ViT blocks" in str(err.value)
        assert "--method vbp or --method global or --method late-l1" in str(err.value)
        with pytest.raises(
            UnsupportedModelError,
            match=r"--method late-l1 is defined for hierarchical .* "
            r"--method p3b or --method vbp or --method global\.",
        ):
            methods.require_family_kind(m, ViTConfig())
        methods.require_family_kind(methods.get_method("vbp"), SwinConfig())  # both kinds: no error
        with pytest.raises(P3BError, match="unknown budgets"):
            methods.MethodTraits(budgets={"flops"})
    finally:
        methods.METHODS.pop("late-l1", None)


def test_a_budget_the_method_does_not_declare_is_refused_before_loading(tmp_path: Path) -> None:
    """``--target-speedup`` with a method whose traits lack ``latency`` is one OptionsError naming the methods
    that take one, raised before the (here nonexistent) model is read."""
    from dataclasses import dataclass

    from p3b_hf import methods
    from p3b_hf.errors import OptionsError
    from p3b_hf.latency.options import LatencyOptions
    from p3b_hf.options import DataOptions, OutputOptions, PruneOptions
    from p3b_hf.runner import PruneJob, prune

    @dataclass
    class Opts:
        keep: float = 0.5

    try:
        methods.register_method("params-only", Opts, lambda ctx, o: None)
        job = PruneJob(
            prune=PruneOptions(model=str(tmp_path / "missing"), method="params-only", prune_ratio=None),
            data=DataOptions(dataset="d"),
            output=OutputOptions(output_dir=str(tmp_path / "out")),
            latency=LatencyOptions(target_speedup=2.0),
        )
        with pytest.raises(OptionsError) as err:
            prune(job)
        assert str(err.value) == (
            "--method params-only takes no latency budget (--target-speedup / --target-latency-ms); use "
            "--prune-ratio, or one of --method p3b, --method vbp, --method global."
        )
        assert not (tmp_path / "out").exists()
    finally:
        methods.METHODS.pop("params-only", None)


#: every flag (and its default) of the tool commands before their flags were generated from dataclasses
_TOOL_FLAGS = {
    "cost": (["--model", "m"], {"--image-size": None, "--json": False}),
    "push": (
        ["--model", "m", "--repo-id", "me/x"],
        {
            "--private": False,
            "--revision": None,
            "--create-pr": False,
            "--commit-message": None,
            "--token": None,
            "--dataset-name": None,
            "--license": None,
            "--no-model-card": False,
            "--no-verify": False,
            "--with-onnx": False,
        },
    ),
    "bench": (
        ["--model", "m"],
        {
            "--random-arch": None,
            "--dense-model": None,
            "--keep": 0.25,
            "--plan-style": "p3b",
            "--plan-round-to": None,
            "--seed": 0,
            "--device": None,
            "--dtype": None,
            "--batch-size": None,
            "--repeats": 10,
            "--warmup": 3,
            "--compile": False,
            "--variants": None,
            "--pruned-variants": "",
            "--min-repeat-s": None,
            "--threads": None,
            "--json": None,
            "--onnx": False,
            "--onnx-batch-sizes": "1,32",
            "--opset": None,
        },
    ),
    "demo": (
        [],
        {
            "--output-dir": "outputs/demo",
            "--prune-ratio": 0.5,
            "--epochs": 6.0,
            "--batch-size": 64,
            "--lr": 1e-3,
            "--augment": "glyph",
            "--pretrain-steps": 450,
            "--source-renders": 4,
            "--train-renders": 3,
            "--eval-renders": 2,
            "--skip-dense": False,
            "--bench-iters": 7,
            "--threads": None,
            "--seed": 0,
            "--family": "vit",
        },
    ),
}


@pytest.mark.parametrize("command", sorted(_TOOL_FLAGS))
def test_tool_commands_build_their_typed_options(command: str) -> None:
    """``cost`` / ``push`` / ``bench`` / ``demo`` flags are generated from one options dataclass each (the
    library call takes it); every earlier flag keeps its name and default, and the parsed flags equal the
    dataclass defaults (the CLI adds nothing)."""
    import dataclasses

    from p3b_hf.cli import build_parser
    from p3b_hf.commands.demo import DemoOptions
    from p3b_hf.options import BenchOptions, CostOptions, PushOptions, flag_of, options_from_namespace

    cls = {"cost": CostOptions, "push": PushOptions, "bench": BenchOptions, "demo": DemoOptions}[command]
    required, flags = _TOOL_FLAGS[command]
    parser = build_parser(command)
    sub = parser._subparsers._group_actions[0].choices[command]
    by_flag = {s: a for a in sub._actions for s in a.option_strings}
    assert {flag: by_flag[flag].default for flag in flags} == flags
    assert {flag_of(f) for f in dataclasses.fields(cls)} <= set(by_flag)
    opts = options_from_namespace(cls, parser.parse_args([command, *required]))
    given = dict(zip(required[::2], required[1::2], strict=True))
    assert opts == cls(**{f.name: given[flag_of(f)] for f in dataclasses.fields(cls) if flag_of(f) in given})
    if command == "bench":  # exactly one of --model / --random-arch
        for argv in ([], ["--model", "m", "--random-arch", "deit-tiny"]):
            with pytest.raises(SystemExit):
                parser.parse_args([command, *argv])
        assert options_from_namespace(cls, parser.parse_args([command, "--random-arch", "deit-tiny"])) == (
            BenchOptions(random_arch="deit-tiny")
        )


def test_mutation_tested_modules_have_no_decorated_no_grad() -> None:
    """mutmut 3.8 generates no mutant for a decorated function, so the modules ``[tool.mutmut] only_mutate``
    names use ``with torch.no_grad():`` blocks (docs/p3b.md "Mutation testing"): a decorator here would
    silently take its function out of ``make mutants``."""
    import fnmatch
    import re

    line = re.search(r"^only_mutate = (\[.*\])$", (ROOT / "pyproject.toml").read_text(), re.M)
    patterns = json.loads(line.group(1))
    files = [
        p for p in PKG.rglob("*.py") if any(fnmatch.fnmatch(str(p.relative_to(ROOT)), g) for g in patterns)
    ]
    assert len(files) > 5
    decorated = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in files
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if line.strip().startswith("@torch.no_grad")
    ]
    assert decorated == []
