"""The one output writer: cnnzoo.fileio.safe_output (what may be written where) and atomic_write (how).

Devices are made here with os.mknod in the test's own folder (the same major/minor as /dev/null), so a
regression can never replace the machine's /dev/null.
"""

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnzoo.errors import OutputError
from cnnzoo.fileio import OUTPUT_KINDS, atomic_write, atomic_write_text, file_kind, safe_output

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 16
ONNX = b"\x08\x0a\x12\x07pytorch" + b"\0" * 8


def safetensors_bytes() -> bytes:
    header = b'{"__metadata__":{}}'
    return len(header).to_bytes(8, "little") + header


@pytest.fixture
def char_device(tmp_path):
    path = tmp_path / "null"
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("creating a character device needs root")
    return path


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- what a file holds ------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated; its files still exist
def test_file_kind_tells_the_formats_apart(tmp_path):
    import torch

    files = {
        "a.png": PNG,
        "a.jpg": JPEG,
        "a.onnx": ONNX,
        "a.safetensors": safetensors_bytes(),
        "a.json": b'{"x": 1}\n',
        "e": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"w": torch.ones(1)}, tmp_path / "state.pt")
    torch.jit.save(torch.jit.script(torch.nn.ReLU()), str(tmp_path / "script.pt"))
    (tmp_path / "noise").write_bytes(bytes(range(256)) * 4)
    kinds = {p.name: file_kind(p) for p in tmp_path.iterdir()}
    assert kinds == {
        "a.png": "png",
        "a.jpg": "jpeg",
        "a.onnx": "onnx",
        "a.safetensors": "safetensors",
        "a.json": "text",
        "e": "empty",
        "state.pt": "torch",
        "script.pt": "torchscript",
        "noise": "data",
    }


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64))
def test_file_kind_of_any_bytes_is_a_known_kind(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("kind") / "f"
    path.write_bytes(data)
    assert file_kind(path) in {
        "empty",
        "safetensors",
        "png",
        "jpeg",
        "gif",
        "webp",
        "pdf",
        "hdf5",
        "torchscript",
        "torch",
        "keras",
        "zip",
        "pickle",
        "onnx",
        "text",
        "data",
    }


# --- safe_output: refusals --------------------------------------------------------------------------


def test_a_new_file_in_an_existing_or_missing_folder_is_allowed(tmp_path):
    assert safe_output(tmp_path / "m.onnx", kind="onnx") == tmp_path / "m.onnx"
    assert safe_output(tmp_path / "a" / "b" / "m.onnx", kind="onnx") == tmp_path / "a" / "b" / "m.onnx"
    assert not (tmp_path / "a").exists()  # checking creates nothing


def test_an_existing_output_needs_force_and_the_same_kind(tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(ONNX)
    with pytest.raises(OutputError, match=r"already exists \(an ONNX model\); pass --force"):
        safe_output(out, kind="onnx")
    assert safe_output(out, kind="onnx", force=True) == out
    checkpoint = tmp_path / "epoch-0002.safetensors"
    checkpoint.write_bytes(safetensors_bytes())
    with pytest.raises(
        OutputError,
        match="holds a safetensors file .*, not an ONNX model: cnnzoo never replaces a file of another kind",
    ):
        safe_output(checkpoint, kind="onnx", force=True)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(JPEG)
    for kind in ("png", "torchscript", "text"):
        with pytest.raises(OutputError, match="holds a JPEG image"):
            safe_output(photo, kind=kind, force=True)
    assert checkpoint.read_bytes() == safetensors_bytes() and photo.read_bytes() == JPEG


def test_an_empty_file_is_replaced_by_any_kind_with_force(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    assert safe_output(tmp_path / "e", kind="png", force=True) == tmp_path / "e"


@pytest.mark.parametrize("force", [False, True])
def test_folders_devices_and_fifos_are_never_a_file_output(tmp_path, char_device, force):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, words in (
        (tmp_path, "is a folder; name a file inside it"),
        (char_device, "is a character device, not a regular file"),
        (fifo, "is a FIFO"),
    ):
        with pytest.raises(OutputError, match=words):
            safe_output(path, kind="onnx", force=force)
    assert stat.S_ISCHR(os.stat(char_device).st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_place_under_a_file_is_refused(tmp_path):
    # As root every folder is writable to os.access, so an unwritable place is simulated by a path under a file
    # (the /etc/passwd/x case); a read-only folder is tested below for other users.
    (tmp_path / "f").write_text("x")
    for kind in ("onnx", "folder"):
        with pytest.raises(OutputError, match=r"cannot be created: .*/f is a file, not a folder"):
            safe_output(tmp_path / "f" / "deeper" / "out.onnx", kind=kind)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder: os.access says so, and so does the kernel")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="not writable"):
            safe_output(folder / "m.onnx", kind="onnx")
        with pytest.raises(OutputError, match="not writable"):
            safe_output(folder, kind="folder")
    finally:
        folder.chmod(0o700)


def test_a_folder_output_may_exist_but_not_be_a_file(tmp_path):
    assert safe_output(tmp_path, kind="folder") == tmp_path
    assert safe_output(tmp_path / "new" / "run", kind="folder") == tmp_path / "new" / "run"
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is text, not a folder"):
        safe_output(tmp_path / "file", kind="folder")


def test_an_unknown_kind_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="kind 'mp4'"):
        safe_output(tmp_path / "x", kind="mp4")
    assert set(OUTPUT_KINDS) >= {"file", "onnx", "torchscript", "safetensors", "png", "json", "svg", "html"}


# --- symbolic links: followed on purpose --------------------------------------------------------------


def test_a_link_is_written_through_to_its_target(tmp_path):
    target = tmp_path / "real.onnx"
    target.write_bytes(ONNX)
    link = tmp_path / "latest.onnx"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="already exists"):
        safe_output(link, kind="onnx")
    resolved = safe_output(link, kind="onnx", force=True)
    assert resolved == target
    atomic_write(link, lambda tmp: Path(tmp).write_bytes(ONNX + b"new"))
    assert link.is_symlink() and target.read_bytes() == ONNX + b"new"


def test_a_link_to_another_kind_or_a_device_or_a_loop_is_refused(tmp_path, char_device):
    checkpoint = tmp_path / "w.safetensors"
    checkpoint.write_bytes(safetensors_bytes())
    (tmp_path / "to_ckpt.onnx").symlink_to(checkpoint)
    (tmp_path / "to_null").symlink_to(char_device)
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    with pytest.raises(OutputError, match="holds a safetensors file"):
        safe_output(tmp_path / "to_ckpt.onnx", kind="onnx", force=True)
    with pytest.raises(OutputError, match="is a character device"):
        safe_output(tmp_path / "to_null", kind="onnx", force=True)
    with pytest.raises(OutputError, match="symbolic link that cannot be followed"):
        safe_output(tmp_path / "loop_a", kind="onnx", force=True)


def test_a_dangling_link_creates_its_target(tmp_path):
    (tmp_path / "out.png").symlink_to(tmp_path / "pics" / "real.png")
    assert safe_output(tmp_path / "out.png", kind="png") == tmp_path / "pics" / "real.png"


# --- atomic_write: permissions, refusals, nothing half-written ---------------------------------------------


def test_written_files_get_the_umask_permissions_even_from_a_writer_that_makes_0600(tmp_path):
    import torch
    from safetensors.torch import save_file

    def private_writer(tmp: str) -> None:  # what safetensors' writer does: a new file, 0600
        os.unlink(tmp)
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600))

    atomic_write(tmp_path / "a.bin", private_writer)
    atomic_write(tmp_path / "b.safetensors", lambda tmp: save_file({"w": torch.ones(2)}, tmp))
    atomic_write_text(tmp_path / "c.json", "{}")
    want = 0o666 & ~umask()
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == dict.fromkeys(
        ("a.bin", "b.safetensors", "c.json"), want
    )


def test_atomic_write_never_replaces_a_device_or_a_folder(tmp_path, char_device):
    for path in (char_device, tmp_path):
        with pytest.raises(OutputError, match="not a regular file"):
            atomic_write_text(path, "x")
    assert stat.S_ISCHR(os.stat(char_device).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null"]  # no temporary file left


def test_atomic_write_under_a_file_names_the_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match=r"/f is a file, not a folder"):
        atomic_write_text(tmp_path / "f" / "g" / "out.json", "{}")


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "m.json"
    out.write_text("old")

    def broken(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(out, broken)
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["m.json"]
