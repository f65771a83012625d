import time

import pytest
import torch

from dfbook import backbones

TINY_CONVNEXT = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DFBOOK_DATA", str(tmp_path / "data"))
    torch.set_num_threads(1)


def test_parse_and_bad_names():
    assert backbones.parse("timm:convnext_base.fb_in22k_ft_in1k") == ("timm", "convnext_base", "fb_in22k_ft_in1k")
    assert backbones.parse("openclip:ViT-L-14.openai") == ("openclip", "ViT-L-14", "openai")
    assert backbones.parse("mini:clip") == ("mini", "clip", None)
    for bad in ("convnext_base", "keras:resnet50", "timm:"):
        with pytest.raises(ValueError, match="must look like"):
            backbones.parse(bad)


def test_random_init_is_seeded_and_independent_of_global_rng():
    torch.manual_seed(123)
    a = backbones.create("timm:convnext_atto", pretrained=False, **TINY_CONVNEXT)
    torch.manual_seed(999)
    b = backbones.create("timm:convnext_atto", pretrained=False, **TINY_CONVNEXT)
    c = backbones.create("timm:convnext_atto", pretrained=False, init_seed=1, **TINY_CONVNEXT)
    wa, wb, wc = (next(m.model.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.weights_id == "random-init:0" and c.weights_id == "random-init:1"


def test_timm_backbone_api():
    bb = backbones.create("timm:convnext_atto", pretrained=False, **TINY_CONVNEXT)
    x = torch.randn(2, 3, 64, 64)
    assert bb.encode_image(x).shape == (2, 64) == (2, bb.dim)
    feats = bb.intermediates(x, [0, -1])
    assert [f.shape for f in feats] == [(2, 8), (2, 64)]
    assert bb.n_blocks == 4
    assert set(bb.spec) == {"size", "mean", "std", "interpolation", "crop_pct", "crop_mode"}
    from PIL import Image

    img = Image.new("RGB", (300, 200))
    assert bb.preprocess(img).shape == (3, 224, 224)
    assert bb.train_preprocess is not None
    p = bb.params()
    backbones.freeze(bb.model, except_=("head",))
    q = bb.params()
    assert p["trainable"] == p["total"] > q["trainable"] > 0 and q["total"] == p["total"]


def test_classifier_head_timm_and_vit_intermediates():
    bb = backbones.create("timm:resnet18", pretrained=False, num_classes=3, layers=(1, 1, 1, 1))
    x = torch.randn(2, 3, 64, 64)
    assert bb.model(x).shape == (2, 3) and bb.encode_image(x).shape == (2, bb.dim)
    vit = backbones.create("timm:vit_tiny_patch16_224", pretrained=False, depth=3, embed_dim=32, num_heads=2,
                           img_size=64)
    cls = vit.intermediates(x, [0, 1, 2])
    assert vit.n_blocks == 3 and [c.shape for c in cls] == [(2, 32)] * 3
    assert not torch.allclose(cls[0], cls[2])


def test_local_weight_file_loads(tmp_path):
    src = backbones.create("timm:convnext_atto", pretrained=False, init_seed=7, **TINY_CONVNEXT)
    f = tmp_path / "atto.pth"
    torch.save(src.model.state_dict(), f)
    bb = backbones.create("timm:convnext_atto", weights=f, **TINY_CONVNEXT)
    for (n, p), q in zip(src.model.state_dict().items(), bb.model.state_dict().values()):
        assert torch.equal(p, q), n
    assert bb.weights_id.startswith("file:")
    # the same file put at the expected place is found without weights=
    exp = backbones.expected_weights("timm:convnext_atto.d2_in1k")
    exp.parent.mkdir(parents=True)
    exp.with_name(exp.name + ".pth").write_bytes(f.read_bytes())
    bb2 = backbones.create("timm:convnext_atto.d2_in1k", **TINY_CONVNEXT)
    assert bb2.weights_id == bb.weights_id
    # a fresh head on top of loaded weights
    bb3 = backbones.create("timm:convnext_atto", weights=f, num_classes=2, **TINY_CONVNEXT)
    assert bb3.model(torch.randn(1, 3, 64, 64)).shape == (1, 2)


@pytest.mark.parametrize("name,needle", [
    ("timm:convnext_atto.d2_in1k", "timm/convnext_atto.d2_in1k"),
    ("timm:legacy_xception", "xception-43020ad28.pth"),
    ("openclip:ViT-B-32.openai", "timm/vit_base_patch32_clip_224.openai"),
])
def test_missing_weights_fail_fast_with_instructions(name, needle):
    import open_clip  # noqa: F401  (import time is not part of the lookup)
    import timm  # noqa: F401

    t0 = time.perf_counter()
    with pytest.raises(backbones.WeightsNotFound) as e:
        backbones.create(name)
    assert time.perf_counter() - t0 < 1.0
    msg = str(e.value)
    assert name in msg and needle in msg
    assert str(backbones.expected_weights(name)) in msg and "python -c" in msg and "pretrained=False" in msg


def test_missing_explicit_file_names_it(tmp_path):
    with pytest.raises(backbones.WeightsNotFound, match="nope.pth"):
        backbones.create("timm:resnet18", weights=tmp_path / "nope.pth")


@pytest.mark.slow
def test_openclip_random_init_towers():
    # the smallest built-in open_clip config keeps this test fast; the mini CLIP is tested in test_zoo
    bb = backbones.create("openclip:RN50", pretrained=False)
    assert bb.clip is not None and bb.tokenizer is not None
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert bb.encode_image(x).shape == (1, bb.dim)
        assert bb.encode_text(["a photo of a cat"]).shape == (1, bb.dim)
    assert bb.spec["size"] == [224, 224] and bb.spec["interpolation"] == "bicubic"
    with pytest.raises(ValueError, match="pretrained tag"):
        backbones.create("openclip:RN50")


@pytest.mark.slow
def test_openclip_weight_file_keeps_tag_settings(tmp_path):
    src = backbones.create("openclip:RN50", pretrained=False, init_seed=3)
    f = tmp_path / "rn50.bin"
    torch.save(src.clip.state_dict(), f)
    bb = backbones.create("openclip:RN50.openai", weights=f)
    assert all(torch.equal(a, b) for a, b in zip(src.clip.state_dict().values(), bb.clip.state_dict().values()))
    # OpenAI weights need QuickGELU; a file path alone would not say so
    assert any(type(m).__name__ == "QuickGELU" for m in bb.clip.modules())
    assert bb.weights_id.startswith("file:")
