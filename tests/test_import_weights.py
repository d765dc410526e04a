"""Foreign .pth weights: every layout maps onto the model exactly, or fails naming the key.

A .pth file is a pickle, and a pickle can run code; the files here are written by the tests with
torch.save, one of them built to run code when loaded unsafely.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from stitchlab.checkpoints import import_state_dict, load_checkpoint, save_checkpoint
from stitchlab.errors import CheckpointError
from stitchlab.models import build_model

SRC = Path(__file__).resolve().parents[1] / "src" / "stitchlab"


@pytest.fixture(scope="module")
def model():
    return build_model(3, latent_dim=16)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _sequential_layout(m):
    """A seed project whose encoder and decoder are bare nn.Sequential on a `model` attribute."""
    return {f"model.{k.replace('.net.', '.')}": v for k, v in m.state_dict().items()}


LAYOUTS = {
    "plain": lambda m: m.state_dict(),
    "data-parallel": lambda m: nn.DataParallel(m).state_dict(),  # module.encoder.net.0.weight
    "wrapped-net": lambda m: {f"net.{k}": v for k, v in m.state_dict().items()},
    "separate-dicts": lambda m: {"encoder": m.encoder.state_dict(),
                                 "decoder": m.decoder.state_dict()},
    "bare-sequential": _sequential_layout,
    "training-checkpoint": lambda m: {"epoch": 7, "model_state_dict": m.state_dict(),
                                      "optimizer_state_dict": {"state": {0: torch.ones(3)}}},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_imports_bit_exact(layout, model, tmp_path):
    path = tmp_path / f"{layout}.pth"
    torch.save(LAYOUTS[layout](model), path)
    imported = import_state_dict(path)
    assert imported.latent_dim == 16 and not imported.training
    assert _same(imported, model)


def _broken(model, edit):
    state = dict(model.state_dict())
    edit(state)
    return state


BROKEN = [
    ("wider bottleneck", lambda s: None, 32,
     r"'encoder.net.6.weight' has shape \(16, 128\) in the file but \(32, 128\) in the model"),
    ("missing key", lambda s: s.pop("decoder.net.6.bias"), None,
     r"missing key 'decoder.net.6.bias'"),
    ("unexpected layer", lambda s: s.update({"encoder.net.9.weight": torch.ones(2, 2)}), None,
     r"unexpected key 'encoder.net.9.weight'"),
    ("foreign tensor", lambda s: s.update({"optimizer.step": torch.ones(1)}), None,
     r"key 'optimizer.step' names no encoder or decoder layer"),
    ("collision", lambda s: s.update({"module.encoder.net.0.bias": torch.ones(256)}), None,
     r"keys 'encoder.net.0.bias' and 'module.encoder.net.0.bias' both mean"),
    ("NaN weight", lambda s: s.update({"decoder.net.3.weight": s["decoder.net.3.weight"]
                                       * float("nan")}), None,
     r"'decoder.net.3.weight' holds NaN or infinite values"),
    ("integer weight", lambda s: s.update({"decoder.net.3.bias": torch.zeros(256).long()}), None,
     r"'decoder.net.3.bias' is a torch.int64 .* weights must be dense floating point"),
]


@pytest.mark.parametrize("case, edit, width, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_a_bad_key_or_shape_is_an_error_naming_it(case, edit, width, message, model, tmp_path):
    path = tmp_path / "w.pth"
    torch.save(_broken(model, edit), path)
    with pytest.raises(CheckpointError, match=message) as info:
        import_state_dict(path, latent_dim=width)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_wrapped_key_is_named_as_it_is_in_the_file(tmp_path):
    wide = nn.DataParallel(build_model(1, latent_dim=64)).state_dict()
    path = tmp_path / "dp64.pth"
    torch.save(wide, path)
    with pytest.raises(CheckpointError, match=re.escape(
            "'module.encoder.net.6.weight' (as 'encoder.net.6.weight') has shape (64, 128) "
            "in the file but (32, 128) in the model")):
        import_state_dict(path, latent_dim=32)


class _RunsCode:
    """Unpickling this calls os.mkdir(target): a stand-in for any code an attacker wants."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(model, tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pth"
    torch.save({**model.state_dict(), "payload": _RunsCode(marker)}, path)

    # The file is a real exploit: loading it unsafely runs the code.
    torch.load(path, weights_only=False)
    assert marker.is_dir()
    marker.rmdir()

    with pytest.raises(CheckpointError, match=r"refused to load: it needs the Python object "
                                              r"\S*mkdir, and unpickling that could run code"):
        import_state_dict(path)
    assert not marker.exists()


def test_a_pickled_module_or_garbage_is_refused(model, tmp_path):
    torch.save(model, tmp_path / "module.pth")
    with pytest.raises(CheckpointError, match="EncoderDecoder.*torch.save\\(model.state_dict"):
        import_state_dict(tmp_path / "module.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a pickle at all")
    with pytest.raises(CheckpointError, match="not a readable PyTorch weights file"):
        import_state_dict(tmp_path / "junk.pth")
    torch.save([torch.ones(2)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list, not a state dict"):
        import_state_dict(tmp_path / "list.pth")


def test_cli_import_weights_writes_a_checkpoint_and_keeps_what_exists(
        model, tmp_path, main_in_process):
    src, out = tmp_path / "seed.pth", tmp_path / "seed.safetensors"
    torch.save(nn.DataParallel(model).state_dict(), src)
    code, stdout, err = main_in_process("import-weights", src, "--out", out)
    assert code == 0, err
    assert f"wrote {out} (latent width 16)" in stdout
    loaded, meta = load_checkpoint(out)
    assert _same(loaded, model)
    assert meta["imported_from"] == "seed.pth" and len(meta["source_sha256"]) == 64

    before = out.read_bytes()
    code, _, err = main_in_process("import-weights", src, "--out", out)
    assert code == 2 and "already exists" in err and out.read_bytes() == before
    code, _, err = main_in_process("import-weights", src, "--latent-dim", "32", "--out",
                                   tmp_path / "other.safetensors")
    assert code == 2 and err.count("\n") == 1 and "(16, 128) in the file" in err

    marker = tmp_path / "code-ran"
    torch.save({"payload": _RunsCode(marker)}, tmp_path / "evil.pth")
    code, _, err = main_in_process("import-weights", tmp_path / "evil.pth", "--out",
                                   tmp_path / "evil.safetensors")
    assert code == 2 and "refused to load" in err and err.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "evil.safetensors").exists()


def test_own_checkpoints_are_safetensors_and_nothing_unpickles_unsafely(model, tmp_path):
    blob = save_checkpoint(tmp_path / "m.safetensors", model, {}).read_bytes()
    header_len = int.from_bytes(blob[:8], "little")
    assert blob[8:9] == b"{" and blob[8 + header_len - 1:8 + header_len].strip() in (b"}", b"")
    for path in SRC.glob("*.py"):
        text = path.read_text()
        assert "import pickle" not in text and "pickle.load" not in text, path.name
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path.name, call)
