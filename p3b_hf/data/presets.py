"""The known data sets (``--dataset cifar100``, ``pacs``, ...): a preset names the Hub id, the columns and the
splits, so that a short name loads the same way everywhere. Kept apart so that the model card (:mod:`p3b_hf.hub`)
can read it without the loader."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Known data sets: Hub id (None = build it locally, see docs/data.md), columns, splits."""

    hub_id: str | None
    image_column: str
    label_column: str
    train_split: str = "train"
    eval_split: str | None = None
    note: str = ""
    domain_column: str | None = None  # the column naming each image's domain (domain-generalisation sets)
    domains: tuple[str, ...] = ()  # the domains as the Hub copy spells them (documentation; the data decides)


PRESETS: dict[str, Preset] = {
    # CIFAR-100 has only train/test; P3B and DeiT report test accuracy, so test is the eval split.
    "cifar100": Preset("uoft-cs/cifar100", "img", "fine_label", "train", "test"),
    "food101": Preset("ethz/food101", "image", "label", "train", "validation", "Hub stand-in for iFood 2019"),
    "ifood2019": Preset(
        None,
        "image",
        "label",
        "train",
        "validation",
        "FoodX-251 has no Hub repo: build an imagefolder (ifood2019/{train,validation}/<class>/*.jpg)",
    ),
    "inat2019": Preset(
        None,
        "image",
        "label",
        "train",
        "validation",
        "iNat 2019 has no Hub repo: build an imagefolder (inat2019/{train,validation}/<class>/*.jpg)",
    ),
    # Domain generalisation (arXiv 2504.04196 evaluates on both): one split holding every domain, a string
    # domain column and a ClassLabel label column (the Flower Labs Hub copies). Train on some domains and
    # test on the others with --train-domains / --test-domains.
    "pacs": Preset(
        "flwrlabs/pacs",
        "image",
        "label",
        "train",
        None,
        "PACS (Li et al. 2017): 9,991 images, 7 classes, 4 domains",
        domain_column="domain",
        domains=("art_painting", "cartoon", "photo", "sketch"),
    ),
    "office-home": Preset(
        "flwrlabs/office-home",
        "image",
        "label",
        "train",
        None,
        "Office-Home (Venkateswara et al. 2017): 15,588 images, 65 classes, 4 domains",
        domain_column="domain",
        domains=("Art", "Clipart", "Product", "Real World"),
    ),
}
PRESETS["officehome"] = PRESETS["office-home"]
