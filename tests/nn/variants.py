"""The layer variants every layer test runs over (timm-style: add one here, it is tested)."""

from __future__ import annotations

from mofme.nn import build_ffn

DIM = 16
EXPERTS = 6
TOP_K = 2

VARIANTS: dict[str, dict] = {
    "dense": dict(kind="dense"),
    "moe-linear": dict(kind="moe", router="linear"),
    "moe-uar": dict(kind="moe", router="uar"),
    "moe-capacity": dict(kind="moe", router="linear", capacity_factor=0.75),
    "mofme-generator-linear": dict(kind="mofme", router="linear", modulation="generator"),
    "mofme-generator-noisy": dict(kind="mofme", router="linear", router_kwargs=dict(noise_std=0.5)),
    "mofme-generator-uar": dict(kind="mofme", router="uar", modulation="generator"),
    "mofme-generator-uar-whitening": dict(
        kind="mofme", router="uar", router_kwargs=dict(calibration="whitening")
    ),
    "mofme-generator-uar-none": dict(kind="mofme", router="uar", router_kwargs=dict(calibration="none")),
    "mofme-lowrank-linear": dict(kind="mofme", router="linear", modulation="lowrank", modulation_rank=4),
    "mofme-lowrank-uar": dict(kind="mofme", router="uar", modulation="lowrank"),  # default rank D / 8
    "mofme-static-linear": dict(kind="mofme", router="linear", modulation="static"),
    "mofme-static-uar": dict(kind="mofme", router="uar", modulation="static"),
    "moe-image-routed": dict(kind="moe", router="linear", route_by="image"),
    "mofme-generator-image-routed": dict(kind="mofme", router="uar", route_by="image"),
}
ROUTED = [name for name, spec in VARIANTS.items() if spec["kind"] != "dense"]


def build(name: str, **overrides):
    spec = {**VARIANTS[name], **overrides}
    kind = spec.pop("kind")
    if kind == "dense":
        spec = {k: v for k, v in spec.items() if k in ("hidden_dim", "dropout")}
    top_k = spec.pop("top_k", TOP_K)
    return build_ffn(kind, dim=DIM, num_experts=EXPERTS, top_k=top_k, **spec)
