"""``interp-hf`` is transformers' Hiera ``interpolate_pos_encoding`` (bicubic, no antialias): equal to
``HieraForImageClassification`` run on the same weights, and not the same as timm's resample (``interp``).
Skips where transformers is not installed (it is not a dependency)."""

from __future__ import annotations

import pytest
import torch

from hiera_bench.models import build_at_size, load_model
from hiera_bench.posembed import get_scheme, spec_from_model

transformers = pytest.importorskip("transformers")


def _hf_twin(timm_net: torch.nn.Module, image_size: int):
    """transformers' Hiera with the timm model's weights (keys renamed; the computation is the same)."""
    from transformers import HieraConfig, HieraForImageClassification

    depths = [1, 1, 1, 1]
    cfg = HieraConfig(embed_dim=timm_net.patch_embed.proj.out_channels, image_size=[image_size, image_size],
                      depths=depths, num_heads=[1, 2, 4, 8], num_query_pool=3, num_labels=timm_net.num_classes,
                      layer_norm_eps=1e-6)
    names = {"pos_embed": "hiera.embeddings.position_embeddings",
             "patch_embed.proj": "hiera.embeddings.patch_embeddings.projection",
             "head.norm": "hiera.pooler.layernorm", "head.fc": "classifier"}
    state = {}
    for key, value in timm_net.state_dict().items():
        prefix, _, rest = key.rpartition(".")
        if key.startswith("blocks."):
            index, tail = key.split(".", 2)[1:]
            tail = tail.replace("norm1", "layernorm_before").replace("norm2", "layernorm_after")
            state[f"hiera.encoder.stages.{int(index)}.layers.0.{tail}"] = value  # one block per stage
        else:
            state[names.get(prefix, prefix) + "." + rest if prefix in names else names[key]] = value
    twin = HieraForImageClassification(cfg).eval()
    missing, unexpected = twin.load_state_dict(state, strict=True)
    assert not missing and not unexpected
    return twin


@pytest.mark.parametrize("size", [96, 128, 32])
def test_interp_hf_is_transformers_hiera(full_ckpt, size):
    loaded = load_model(checkpoint=full_ckpt)
    native = loaded.native_size
    twin = _hf_twin(loaded.model, native)
    geometry = loaded.geometry.at(size)
    spec = spec_from_model(loaded.model, native)
    ours = get_scheme("interp-hf")(spec, geometry.token_grid, geometry.mask_grid)
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        theirs_embed = twin.hiera.embeddings.interpolate_pos_encoding(
            torch.zeros(1, geometry.n_tokens, spec.full.shape[-1]), twin.hiera.embeddings.position_embeddings,
            size, size)
        assert torch.equal(ours, theirs_embed)
        logits = build_at_size(loaded, size, ours)(x)
        reference = twin(pixel_values=x, interpolate_pos_encoding=True).logits
    assert (logits - reference).abs().max().item() < 1e-4
    timm_interp = get_scheme("interp")(spec, geometry.token_grid, geometry.mask_grid)
    assert (timm_interp - ours).abs().max().item() > 1e-3  # the two plain interpolations are not the same


def test_interp_hf_at_native_is_the_checkpoint(full_ckpt):
    loaded = load_model(checkpoint=full_ckpt)
    spec = spec_from_model(loaded.model, loaded.native_size)
    geometry = loaded.geometry.at(loaded.native_size)
    assert torch.equal(get_scheme("interp-hf")(spec, geometry.token_grid, geometry.mask_grid), spec.full.float())
