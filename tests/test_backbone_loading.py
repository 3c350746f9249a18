"""CLIP loading (file / cache / download / errors), model sizes, input-size check, precision policy."""

from __future__ import annotations

import copy
import shutil
import urllib.error
import warnings
import zipfile

import clip
import pytest
import torch
from clip.model import CLIP, convert_weights

from anchoropt.backbone import loading, precision
from anchoropt.backbone.loading import check_input_size, load_clip, model_dims
from anchoropt.backbone.precision import Precision, convert_matrix_weights
from anchoropt.backbone.random_clip import CLIP_SPECS, build_random_clip, save_clip_state_dict
from anchoropt.backbone.text_encoder import TextEncoder
from anchoropt.errors import CheckpointError, ConfigError
from tests.support.clip_fixtures import (  # noqa: F401  (pytest fixtures)
    tiny_clip,
    tiny_clip_dir,
    tiny_clip_jit_file,
    tiny_clip_state_dict_file,
)


def assert_same_weights(a: CLIP, b: CLIP) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def assert_frozen_fp32_eval(model: CLIP) -> None:
    assert isinstance(model, CLIP)
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.fixture
def no_download(monkeypatch):
    def fail(url, root):
        raise AssertionError(f"unexpected download of {url}")

    monkeypatch.setattr(loading, "_download", fail)


# --- random CLIP -------------------------------------------------------------------------------


def test_random_clip_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_random_clip("tiny", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert_same_weights(a, build_random_clip("tiny", seed=3))
    assert not torch.equal(a.text_projection, build_random_clip("tiny", seed=4).text_projection)


def test_random_clip_unknown_spec_lists_specs():
    with pytest.raises(ConfigError, match="ViT-B/16"):
        build_random_clip("ViT-H/99")


@pytest.mark.parametrize("spec", ["tiny", "ViT-B/32", "ViT-B/16", "ViT-L/14"])
def test_random_specs_have_the_published_sizes(spec):
    # Built on the meta device: the sizes are real but no memory or init time is spent.
    with torch.device("meta"):
        model = CLIP(**CLIP_SPECS[spec])
    dims = model_dims(model)
    s = CLIP_SPECS[spec]
    assert (dims.text_width, dims.text_layers, dims.text_heads) == (
        s["transformer_width"],
        s["transformer_layers"],
        s["transformer_heads"],
    )
    assert (dims.vision_width, dims.vision_layers, dims.vision_patch_size) == (
        s["vision_width"],
        s["vision_layers"],
        s["vision_patch_size"],
    )
    assert (dims.embed_dim, dims.input_resolution, dims.context_length) == (
        s["embed_dim"],
        s["image_resolution"],
        s["context_length"],
    )
    # clip.model.build_model infers heads as width // 64; the specs must agree with it.
    assert dims.text_heads == dims.text_width // 64 and dims.vision_heads == dims.vision_width // 64


# --- loading from a file ------------------------------------------------------------------------


def test_load_state_dict_file(tiny_clip, tiny_clip_state_dict_file):
    model = load_clip("ViT-B/16", path=str(tiny_clip_state_dict_file))
    assert_frozen_fp32_eval(model)
    assert_same_weights(model, tiny_clip)  # fp32 weights survive build_model's fp16 conversion


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_load_jit_archive(tiny_clip, tiny_clip_jit_file):
    with zipfile.ZipFile(tiny_clip_jit_file) as zf:
        assert any(n.endswith("constants.pkl") for n in zf.namelist())
    archive = torch.jit.load(str(tiny_clip_jit_file))
    assert "input_resolution" in archive.state_dict()  # like the released archives

    model = load_clip(path=str(tiny_clip_jit_file))
    assert_frozen_fp32_eval(model)
    assert_same_weights(model, tiny_clip)


def test_loaded_model_computes_like_the_original(tiny_clip, tiny_clip_jit_file):
    model = load_clip(path=str(tiny_clip_jit_file))
    tokens = clip.tokenize(["a photo of a cat.", "dog"])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model.encode_text(tokens), tiny_clip.encode_text(tokens))
        assert torch.equal(model.encode_image(images), tiny_clip.encode_image(images))


def test_fp16_state_dict_loads_as_fp32(tiny_clip, tmp_path):
    path = save_clip_state_dict(tiny_clip, tmp_path / "half.pt", half=True)
    model = load_clip(path=path)
    assert_frozen_fp32_eval(model)
    assert torch.equal(model.text_projection, tiny_clip.text_projection.half().float())


def test_load_any_clip_size(tmp_path):
    # A size that is none of the named specs: 2 text heads, 3 text layers, patch 8.
    torch.manual_seed(0)
    other = CLIP(
        embed_dim=16,
        image_resolution=24,
        vision_layers=1,
        vision_width=64,
        vision_patch_size=8,
        context_length=77,
        vocab_size=49408,
        transformer_width=128,
        transformer_heads=2,
        transformer_layers=3,
    )
    model = load_clip(path=save_clip_state_dict(other, tmp_path / "other.pt"))
    dims = model_dims(model)
    assert (dims.text_width, dims.text_heads, dims.text_layers) == (128, 2, 3)
    assert (dims.embed_dim, dims.input_resolution, dims.vision_patch_size) == (16, 24, 8)
    assert_same_weights(model, other)


# --- cache and download -------------------------------------------------------------------------


def test_cache_is_used_before_download(tiny_clip, tiny_clip_state_dict_file, tmp_path, no_download):
    target = loading.cached_weights_path("ViT-B/16", str(tmp_path))
    assert target == str(tmp_path / "ViT-B-16.pt")
    shutil.copy(tiny_clip_state_dict_file, target)
    assert_same_weights(load_clip("ViT-B/16", download_root=str(tmp_path)), tiny_clip)


def test_default_cache_dir_is_clips(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert loading.cached_weights_path("ViT-B/32") == str(tmp_path / ".cache" / "clip" / "ViT-B-32.pt")


def test_download_when_not_cached(tiny_clip, tiny_clip_jit_file, tmp_path, monkeypatch):
    calls = []

    def fake_download(url, root):
        calls.append((url, root))
        dest = f"{root}/ViT-L-14.pt"
        shutil.copy(tiny_clip_jit_file, dest)
        return dest

    monkeypatch.setattr(loading, "_download", fake_download)
    model = load_clip("ViT-L/14", download_root=str(tmp_path))
    assert len(calls) == 1 and calls[0][0].endswith("/ViT-L-14.pt") and calls[0][1] == str(tmp_path)
    assert_same_weights(model, tiny_clip)


def test_offline_without_file_says_where_to_put_it(tmp_path, monkeypatch):
    def offline(url, root):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(loading, "_download", offline)
    with pytest.raises(CheckpointError) as info:
        load_clip("ViT-B/16", download_root=str(tmp_path / "cache"))
    message = str(info.value)
    assert str(tmp_path / "cache" / "ViT-B-16.pt") in message
    assert "MODEL.BACKBONE.PATH" in message
    assert "no network" in message


# --- errors -------------------------------------------------------------------------------------


def test_unknown_backbone_lists_available(no_download):
    with pytest.raises(ConfigError) as info:
        load_clip("ViT-X/99")
    assert "ViT-X/99" in str(info.value) and "ViT-B/16" in str(info.value) and "RN50" in str(info.value)


def test_missing_path(tmp_path, no_download):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError, match="MODEL.BACKBONE.PATH") as info:
        load_clip(path=str(missing))
    assert str(missing) in str(info.value)


def test_file_that_is_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointError, match="neither a TorchScript archive nor a state dict") as info:
        load_clip(path=str(junk))
    assert str(junk) in str(info.value)


def test_state_dict_of_something_else(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a CLIP state dict") as info:
        load_clip(path=str(path))
    assert "text_projection" in str(info.value)


class _Pickled:  # weights_only loading must refuse arbitrary objects
    pass


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "pickle.pt"
    torch.save({"obj": _Pickled()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_clip(path=str(path))


def test_mismatched_clip_state_dict(tiny_clip, tmp_path):
    state = {k: v.clone() for k, v in tiny_clip.state_dict().items()}
    state["ln_final.bias"] = torch.zeros(7)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="build_model"):
        load_clip(path=str(path))


# --- sizes and input size -----------------------------------------------------------------------


def test_model_dims_of_tiny(tiny_clip):
    dims = model_dims(tiny_clip)
    spec = CLIP_SPECS["tiny"]
    assert dims.text_width == tiny_clip.token_embedding.weight.shape[1] == spec["transformer_width"]
    assert dims.vision_width == spec["vision_width"] and dims.vision_layers == spec["vision_layers"]
    assert dims.embed_dim == spec["embed_dim"] and dims.vocab_size == spec["vocab_size"]
    assert dims.is_vit


def test_check_input_size(tiny_clip):
    check_input_size(tiny_clip, 32)
    check_input_size(tiny_clip, (32, 32))
    with pytest.raises(ConfigError) as info:
        check_input_size(tiny_clip, (224, 224))
    assert "INPUT.SIZE" in str(info.value) and "32" in str(info.value)


# --- precision ----------------------------------------------------------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(precision, "_warned", set())


@pytest.mark.parametrize("prec", ["fp16", "bf16"])
def test_half_on_cpu_falls_back_to_fp32_with_one_warning(fresh_warnings, prec):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = Precision(prec, "cpu")
        second = Precision(prec, "cpu")
    assert [str(w.message) for w in caught if prec in str(w.message)] == [
        f"PREC={prec} needs a CUDA device; running in fp32 on cpu (MODEL.BACKBONE.HALF_ON_CPU True runs it in {prec} "
        "there)"
    ]
    for policy in (first, second):
        assert policy.prec == "fp32" and policy.requested == prec
        assert policy.model_dtype == torch.float32 and policy.scaler is None
        assert policy.describe()["used"] == "fp32"


@pytest.mark.parametrize("prec, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_on_cpu_when_asked(fresh_warnings, tiny_clip, prec, dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # asked for: no fallback warning
        policy = Precision(prec, "cpu", half_on_cpu=True)
    assert (policy.prec, policy.model_dtype, policy.scaler, policy.autocast_dtype) == (prec, dtype, None, None)
    model = policy.apply(copy.deepcopy(tiny_clip))
    assert model.visual.conv1.weight.dtype == model.visual.proj.dtype == dtype
    assert model.transformer.resblocks[0].mlp.c_fc.weight.dtype == dtype
    assert model.ln_final.weight.dtype == model.token_embedding.weight.dtype == torch.float32


def test_fp32_has_no_autocast():
    policy = Precision("fp32", "cpu")
    with policy.autocast():
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32 and policy.scaler is None


def test_amp_on_cpu_autocasts_to_bf16():
    policy = Precision("amp", "cpu")
    assert policy.model_dtype == torch.float32 and policy.scaler is None
    with policy.autocast():
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.bfloat16


def test_bad_prec():
    with pytest.raises(ConfigError, match="PREC='bf32'"):
        Precision("bf32", "cpu")


def test_matrix_weights_are_those_clip_converts_to_fp16(tiny_clip):
    ours, clips = copy.deepcopy(tiny_clip), copy.deepcopy(tiny_clip)
    convert_matrix_weights(ours, torch.bfloat16)
    convert_weights(clips)
    half = {torch.float16: torch.bfloat16, torch.float32: torch.float32}
    assert {k: v.dtype for k, v in ours.state_dict().items()} == {
        k: half[v.dtype] for k, v in clips.state_dict().items()
    }


def test_bf16_on_cuda_needs_no_scaler_and_falls_back_where_unsupported(fresh_warnings, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    policy = Precision("bf16", "cuda")  # no CUDA needed to build the policy
    assert (policy.prec, policy.model_dtype, policy.scaler, policy.autocast_dtype) == (
        "bf16",
        torch.bfloat16,
        None,
        None,
    )
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)  # pre-Ampere
    with pytest.warns(UserWarning, match="PREC=bf16 is not supported by this GPU; running in fp32"):
        assert Precision("bf16", "cuda").model_dtype == torch.float32


def test_fp16_policy_converts_clip_weights(tiny_clip):
    model = copy.deepcopy(tiny_clip)
    policy = Precision("fp16", "cuda")  # no CUDA needed to convert weights
    assert policy.model_dtype == torch.float16
    policy.apply(model)
    assert model.text_projection.dtype == torch.float16
    assert model.transformer.resblocks[0].attn.in_proj_weight.dtype == torch.float16
    Precision("fp32", "cpu").apply(model)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_fp16_text_encoder_matches_fp32(tiny_clip):
    model = copy.deepcopy(tiny_clip)
    tokens = clip.tokenize(["a photo of a cat.", "a small dog on a sofa"])
    with torch.no_grad():
        reference = TextEncoder(model).encode_token_ids(tokens)
        Precision("fp16", "cuda").apply(model)
        half = TextEncoder(model).encode_token_ids(tokens)
    assert half.dtype == torch.float16
    assert torch.allclose(half.float(), reference, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("prec", ["fp32", "amp"])
def test_backward_and_step(prec):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    policy = Precision(prec, "cpu")
    for _ in range(2):  # a second step must not accumulate the first step's gradient
        with policy.autocast():
            loss = (weight * torch.tensor([1.0, 2.0, 3.0])).sum()
        policy.backward_and_step(loss, optimizer)
    assert torch.allclose(weight.detach(), torch.tensor([0.0, -1.0, -2.0]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_on_cuda_uses_a_grad_scaler():
    policy = Precision("amp", "cuda")
    assert policy.autocast_dtype == torch.float16 and policy.scaler is not None
    weight = torch.nn.Parameter(torch.ones(3, device="cuda"))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    with policy.autocast():
        loss = (weight * torch.tensor([1.0, 2.0, 3.0], device="cuda")).sum()
    policy.backward_and_step(loss, optimizer)
    assert torch.allclose(weight.detach().cpu(), torch.tensor([0.5, 0.0, -0.5]))
