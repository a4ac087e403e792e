"""cnnzoo.hub against a loopback server: download, caches, verification, resume, locking, offline mode.

Every test runs with CNNZOO_HOME, TORCH_HOME and KERAS_HOME in its own temporary folder, so no real
cache is read or written, and the only server is tests/loopback.py on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
import torch.hub
from hypothesis import given
from hypothesis import strategies as st

from cnnzoo import hub
from cnnzoo.errors import WeightsError
from tests.loopback import LoopbackServer, random_bytes

SRC = Path(__file__).resolve().parents[1] / "src"
FAST = {"retries": 0, "backoff": 0.0, "timeout": 10.0}


@pytest.fixture(autouse=True)
def caches(tmp_path, monkeypatch):
    """Fresh, private caches for cnnzoo, torch.hub and Keras; network allowed (to 127.0.0.1 only)."""
    for var, sub in (("CNNZOO_HOME", "cnnzoo"), ("TORCH_HOME", "torch"), ("KERAS_HOME", "keras")):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.delenv("CNNZOO_OFFLINE", raising=False)
    hub._VERIFIED.clear()
    return tmp_path


@pytest.fixture
def server():
    with LoopbackServer() as running:
        yield running


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def own_files(tmp_path: Path) -> set[str]:
    folder = tmp_path / "cnnzoo" / "weights"
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


# --------------------------------------------------------------------------------------------------
# Download and cache
# --------------------------------------------------------------------------------------------------


def test_download_then_cache_hit_with_the_server_gone(server, caches):
    data = random_bytes(3_000_000, seed=1)
    url = server.add("/model-abc.pth", data)
    path = hub.download_url(url, sha256=sha256(data), **FAST)
    assert path == caches / "cnnzoo" / "weights" / "model-abc.pth"
    assert path.read_bytes() == data
    assert own_files(caches) == {"model-abc.pth", "model-abc.pth.lock"}  # no .partial left behind
    assert [r.status for r in server.served("/model-abc.pth")] == [200]
    server.stop()
    hub.settle()
    hub._VERIFIED.clear()  # as a new process: the digest remembered on disk is used
    assert hub.download_url(url, sha256=sha256(data)[:8], **FAST) == path


def test_a_warm_cache_is_not_hashed_again_until_the_file_changes(server, caches, monkeypatch):
    data = random_bytes(300_000, seed=7)
    url = server.add("/warm.pth", data)
    path = hub.download_url(url, sha256=sha256(data), **FAST)
    hub.settle()  # the stamp is written once the file is on disk
    hashed = []
    real = hub.new_hasher
    monkeypatch.setattr(hub, "new_hasher", lambda algorithm: hashed.append(algorithm) or real(algorithm))
    hub._VERIFIED.clear()  # a new process: only verified.json remembers
    assert hub.find_cached(url, sha256(data)) == path and hashed == []
    st = path.stat()
    path.write_bytes(b"X" + data[1:])  # same size; the mtime put back, as a careless copy tool might
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    hub._VERIFIED.clear()
    assert hub.find_cached(url, sha256(data)) is None and hashed == ["sha256"]  # the ctime changed: hashed
    server.stop()
    outside = caches / "mine.pth"  # a file outside the caches is hashed each time and leaves no stamp
    outside.write_bytes(data)
    stamps = (caches / "cnnzoo" / "verified.json").read_text()
    assert hub.file_digest(outside) == sha256(data)
    assert (caches / "cnnzoo" / "verified.json").read_text() == stamps and str(outside) not in stamps


def test_sha256_prefix_and_md5_pins(server):
    data = random_bytes(200_000, seed=2)
    url = server.add("/w.h5", data)
    assert hub.download_url(url, md5=hashlib.md5(data).hexdigest(), **FAST).read_bytes() == data
    assert hub.fetch_file(url, "sha256:" + sha256(data)[:10], **FAST).read_bytes() == data
    assert len(server.served("/w.h5")) == 1  # the second pin found the cached file
    with pytest.raises(hub.DigestMismatchError, match=r"md5"):
        hub.download_url(server.add("/other.h5", data + b"x"), md5=hashlib.md5(data).hexdigest(), **FAST)


def test_digest_mismatch_keeps_nothing_and_says_expected_and_got(server, caches):
    data = random_bytes(500_000, seed=3)
    url = server.add("/bad.pth", data)
    wrong = "0" * 64
    with pytest.raises(hub.DigestMismatchError) as failure:
        hub.download_url(url, sha256=wrong, **FAST)
    message = str(failure.value)
    assert sha256(data) in message and wrong in message and url in message
    assert own_files(caches) == {"bad.pth.lock"}


def test_truncated_transfer_then_resume_sends_range_and_only_the_rest(server, caches):
    data = random_bytes(2_000_000, seed=4)
    url = server.add("/big.pth", data)
    server.drops["/big.pth"] = [700_000]
    target = caches / "cnnzoo" / "weights" / "big.pth"
    with pytest.raises(hub.DownloadError) as failure:
        hub.download_url(url, sha256=sha256(data), **FAST)
    assert url in str(failure.value) and str(target) in str(failure.value)
    partial = target.with_name("big.pth.partial")
    assert partial.stat().st_size == 700_000 and not target.exists()

    assert hub.download_url(url, sha256=sha256(data), **FAST).read_bytes() == data
    first, second = server.served("/big.pth")
    assert (first.range, first.bytes_sent) == (None, 700_000)
    assert (second.range, second.status, second.bytes_sent) == ("bytes=700000-", 206, len(data) - 700_000)
    assert not partial.exists()


def test_retries_resume_within_one_call(server):
    data = random_bytes(1_500_000, seed=5)
    url = server.add("/flaky.pth", data)
    server.drops["/flaky.pth"] = [300_000, 400_000]
    server.errors["/flaky.pth"] = [503]
    path = hub.download_url(url, sha256=sha256(data), retries=3, backoff=0.0)
    assert path.read_bytes() == data
    served = server.served("/flaky.pth")
    assert [r.status for r in served] == [503, 200, 206, 206]
    assert [r.range for r in served] == [None, None, "bytes=300000-", "bytes=700000-"]
    assert sum(r.bytes_sent for r in served) == len(data)  # nothing was sent twice


def test_many_small_chunks_wrap_the_buffers_and_resume_intact(server, caches, monkeypatch):
    """The read-write / hash hand-over over many chunks (its 4 buffers reused 100s of times) and a
    dropped connection mid-stream: what was hashed is what was written, so the resumed file verifies."""
    monkeypatch.setattr(hub, "CHUNK_BYTES", 4096)
    data = random_bytes(1_000_003, seed=12)  # not a whole number of chunks
    url = server.add("/chunks.pth", data)
    server.drops["/chunks.pth"] = [333_333]
    path = hub.download_url(url, sha256=sha256(data), retries=1, backoff=0.0)
    assert path.read_bytes() == data
    assert [(r.range, r.bytes_sent) for r in server.served("/chunks.pth")] == [
        (None, 333_333),
        ("bytes=333333-", len(data) - 333_333),
    ]


def test_the_stamp_is_written_only_after_the_file_is_on_disk(server, caches, monkeypatch):
    """download_url returns once the file is renamed into place; the fsync and then the stamp follow on a
    thread. A file never synced (a power cut, simulated by a failing fsync) gets no stamp, so the next
    process hashes it rather than trusting it."""
    data = random_bytes(600_000, seed=14)
    url = server.add("/durable.pth", data)
    stamps = caches / "cnnzoo" / "verified.json"
    events = []
    real_fsync, real_persist = os.fsync, hub._persist
    monkeypatch.setattr(
        hub.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or real_fsync(fd)
    )
    monkeypatch.setattr(hub, "_persist", lambda key, full: events.append(("stamp", key[0])) or real_persist(key, full))
    path = hub.download_url(url, sha256=sha256(data), **FAST)
    hub.settle()
    assert events[:3] == [("fsync", str(path)), ("fsync", str(path.parent)), ("stamp", str(path))]
    assert str(path) in stamps.read_text()

    second = server.add("/unsynced.pth", data[::-1])
    monkeypatch.setattr(hub.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "Input/output error")))
    path = hub.download_url(second, sha256=sha256(data[::-1]), **FAST)
    hub.settle()
    assert str(path) not in stamps.read_text()
    hashed = []
    real_hasher = hub.new_hasher
    monkeypatch.setattr(hub, "new_hasher", lambda algorithm: hashed.append(algorithm) or real_hasher(algorithm))
    hub._VERIFIED.clear()  # a new process
    assert hub.find_cached(second, sha256(data[::-1])) == path and hashed == ["sha256"]


def test_a_disk_error_while_writing_is_final_and_keeps_what_was_written(server, caches, monkeypatch):
    data = random_bytes(3_000_000, seed=13)
    url = server.add("/full.pth", data)
    real_append = hub._PartialFile.append

    def append(self, view):
        if self.file.tell() + len(view) > 2_000_000:
            raise OSError(28, "No space left on device")
        real_append(self, view)

    monkeypatch.setattr(hub._PartialFile, "append", append)
    with pytest.raises(hub.DownloadError, match="could not write .*full.pth.partial.*No space left on device"):
        hub.download_url(url, sha256=sha256(data), retries=3, backoff=0.0)
    assert len(server.served("/full.pth")) == 1  # not retried: another attempt would fill the disk again
    target = caches / "cnnzoo" / "weights" / "full.pth"
    assert not target.exists()
    monkeypatch.setattr(hub._PartialFile, "append", real_append)  # space again: the next call resumes and verifies
    assert hub.download_url(url, sha256=sha256(data), **FAST).read_bytes() == data


def test_the_rest_of_the_file_is_reserved_on_disk_before_it_streams(server, caches):
    """fallocate(KEEP_SIZE): the blocks for every byte still to come are allocated up front, while the
    partial file's size still says how much has arrived (what the resume asks for)."""
    if hub._libc_fallocate() is None:
        pytest.skip("no fallocate(2) here (not Linux)")
    data = random_bytes(3_000_000, seed=15)
    url = server.add("/reserved.pth", data)
    server.drops["/reserved.pth"] = [500_000]
    with pytest.raises(hub.DownloadError):
        hub.download_url(url, sha256=sha256(data), **FAST)
    partial = caches / "cnnzoo" / "weights" / "reserved.pth.partial"
    st = partial.stat()
    assert st.st_size == 500_000
    assert st.st_blocks * 512 >= len(data)  # allocated for the whole file, not just what arrived
    assert hub.download_url(url, sha256=sha256(data), **FAST).read_bytes() == data


def test_a_disk_without_room_is_said_before_the_transfer(server, caches, monkeypatch):
    data = random_bytes(2_000_000, seed=16)
    url = server.add("/huge.pth", data)
    reserved = []

    def no_room(fd, offset, length):
        reserved.append((offset, length))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(hub, "_allocate_keeping_size", no_room)
    with pytest.raises(hub.DownloadError) as failure:
        hub.download_url(url, sha256=sha256(data), retries=3, backoff=0.0)
    message = str(failure.value)
    assert "No space left on device for the 2.0 MB still to come" in message
    assert re.search(r"\(\d+\.\d MB free there\)", message) and "CNNZOO_HOME" in message
    assert reserved == [(0, len(data))] and len(server.served("/huge.pth")) == 1  # asked once, not retried
    assert (caches / "cnnzoo" / "weights" / "huge.pth.partial").stat().st_size == 0  # no byte written


def test_chunk_buffers_are_made_as_needed_and_kept_for_the_next_download(server, monkeypatch):
    """Fresh memory costs a page fault per page: a small file makes only the buffers it needs, and
    the next download in the process takes the same buffers back."""
    while not hub._SPARE_BUFFERS.empty():
        hub._SPARE_BUFFERS.get_nowait()
    made = []
    real_spare = hub._spare_buffer
    monkeypatch.setattr(hub, "_spare_buffer", lambda: made.append(real_spare()) or made[-1])
    small = random_bytes(100_000, seed=17)
    hub.download_url(server.add("/small.pth", small), sha256=sha256(small), **FAST)
    assert len(made) == 1 and hub._SPARE_BUFFERS.qsize() == 1
    first = made[0]
    big = random_bytes(5 * hub.CHUNK_BYTES + 1, seed=18)
    assert hub.download_url(server.add("/big.pth", big), sha256=sha256(big), **FAST).read_bytes() == big
    assert made[1] is first  # taken back from the spare buffers
    buffers = {id(buffer) for buffer in made}
    assert 2 <= len(buffers) <= hub.CHUNKS_IN_FLIGHT and hub._SPARE_BUFFERS.qsize() == len(buffers)


def test_a_folder_where_the_file_goes_is_named_before_anything_is_downloaded(server, caches):
    data = random_bytes(10_000, seed=19)
    url = server.add("/taken.pth", data)
    (caches / "cnnzoo" / "weights" / "taken.pth").mkdir(parents=True)
    with pytest.raises(hub.DownloadError, match=r"taken.pth is in the way .* not a regular file"):
        hub.download_url(url, sha256=sha256(data), **FAST)
    assert server.served("/taken.pth") == []


def test_a_server_that_ignores_range_is_read_from_zero(server):
    data = random_bytes(1_000_000, seed=6)
    url = server.add("/norange.pth", data)
    server.honour_range = False
    server.drops["/norange.pth"] = [250_000]
    assert hub.download_url(url, sha256=sha256(data), retries=1, backoff=0.0).read_bytes() == data
    assert [(r.range, r.status, r.bytes_sent) for r in server.served("/norange.pth")] == [
        (None, 200, 250_000),
        ("bytes=250000-", 200, len(data)),
    ]


def test_a_stale_partial_file_is_discarded_after_it_fails_to_verify(server, caches):
    data = random_bytes(800_000, seed=7)
    url = server.add("/stale.pth", data)
    partial = caches / "cnnzoo" / "weights" / "stale.pth.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 100_000)  # left by an interrupted download of another version of the file
    assert hub.download_url(url, sha256=sha256(data), **FAST).read_bytes() == data
    assert [r.range for r in server.served("/stale.pth")] == ["bytes=100000-", None]


def test_http_errors_name_the_url_and_path_and_4xx_is_not_retried(server, caches):
    url = server.url("/missing.pth")
    with pytest.raises(hub.DownloadError, match=r"HTTP 404") as failure:
        hub.download_url(url, sha256="ab" * 32, retries=3, backoff=0.0)
    assert url in str(failure.value) and str(caches / "cnnzoo" / "weights" / "missing.pth") in str(failure.value)
    assert len(server.served("/missing.pth")) == 1


def test_redirects_are_followed_over_http_only(server):
    data = random_bytes(10_000, seed=8)
    server.add("/real.pth", data)
    server.redirects["/moved.pth"] = server.url("/real.pth")
    assert hub.download_url(server.url("/moved.pth"), sha256=sha256(data), **FAST).read_bytes() == data
    server.redirects["/sneaky.pth"] = "ftp://127.0.0.1/real.pth"
    with pytest.raises(hub.DownloadError, match=r"not http\(s\); refused"):
        hub.download_url(server.url("/sneaky.pth"), sha256=sha256(data), **FAST)


def test_progress_bar_on_request(server, capsys):
    data = random_bytes(300_000, seed=9)
    hub.download_url(server.add("/shown.pth", data), sha256=sha256(data), progress=True, **FAST)
    assert "shown.pth" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# Several processes, offline mode, caches of other libraries
# --------------------------------------------------------------------------------------------------

# A fetching process imports cnnzoo.hub without the package's __init__ (which imports torch, seconds per
# process): hub needs only the standard library, which the "torch" flag printed below also proves.
_FETCH_IN_A_PROCESS = """
import hashlib, json, sys, types
package = types.ModuleType("cnnzoo"); package.__path__ = [sys.argv[1]]; sys.modules["cnnzoo"] = package
from cnnzoo.hub import download_url
path = download_url(sys.argv[2], sha256=sys.argv[3], progress=False)
digest = hashlib.sha256(path.read_bytes()).hexdigest()
print(json.dumps({"path": str(path), "sha256": digest, "torch": "torch" in sys.modules}))
"""


def test_concurrent_processes_download_once_and_read_the_same_bytes(server):
    data = random_bytes(4_000_000, seed=10)
    url = server.add("/shared.pth", data)
    server.seconds_per_write = 0.05  # ~0.8 s of transfer: every process asks while the first downloads
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FETCH_IN_A_PROCESS, str(SRC / "cnnzoo"), url, sha256(data)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        for _ in range(3)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert len(server.served("/shared.pth")) == 1
    assert {r["path"] for r in results} == {str(hub.cache_path(url))}
    assert {r["sha256"] for r in results} == {sha256(data)}
    assert not any(r["torch"] for r in results)


def test_offline_mode_uses_the_cache_and_names_url_and_path_on_a_miss(server, caches, monkeypatch):
    data = random_bytes(100_000, seed=11)
    url = server.add("/cached.pth", data)
    path = hub.download_url(url, sha256=sha256(data), **FAST)
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    assert hub.download_url(url, sha256=sha256(data), **FAST) == path
    missing = server.add("/never.pth", data)
    with pytest.raises(hub.OfflineError) as failure:
        hub.download_url(missing, sha256=sha256(data), **FAST)
    assert missing in str(failure.value)
    assert f"put it at {caches / 'cnnzoo' / 'weights' / 'never.pth'} " in str(failure.value)
    assert len(server.requests) == 1  # offline, nothing went over the wire


def test_a_bad_file_in_the_cache_is_never_returned(server, caches, monkeypatch):
    data = random_bytes(100_000, seed=12)
    url = server.add("/swapped.pth", data)
    target = caches / "cnnzoo" / "weights" / "swapped.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the weights")
    monkeypatch.setenv("CNNZOO_OFFLINE", "1")
    with pytest.raises(hub.OfflineError, match=sha256(b"not the weights")):
        hub.download_url(url, sha256=sha256(data), **FAST)
    monkeypatch.delenv("CNNZOO_OFFLINE")
    assert hub.download_url(url, sha256=sha256(data), **FAST).read_bytes() == data
    assert len(server.served("/swapped.pth")) == 1


def test_torch_hub_cache_is_used_in_place_when_it_verifies(server, caches):
    data = random_bytes(50_000, seed=13)
    url = server.add("/resnet-0123abcd.pth", data)
    theirs = Path(torch.hub.get_dir()) / "checkpoints" / "resnet-0123abcd.pth"
    assert theirs.parent == caches / "torch" / "hub" / "checkpoints"  # TORCH_HOME is honoured like torch does
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(data)
    assert hub.download_url(url, sha256=sha256(data), **FAST) == theirs
    assert server.served("/resnet-0123abcd.pth") == []
    theirs.write_bytes(data[:-1] + b"?")  # a corrupt copy there: skipped, left alone, ours downloaded
    ours = hub.download_url(url, sha256=sha256(data), **FAST)
    assert ours == caches / "cnnzoo" / "weights" / "resnet-0123abcd.pth" and ours.read_bytes() == data
    assert theirs.read_bytes().endswith(b"?")


def test_keras_cache_is_used_in_place_with_keras_md5(server, caches):
    data = random_bytes(50_000, seed=14)
    url = server.add("/vgg16_weights_tf_dim_ordering_tf_kernels.h5", data)
    theirs = caches / "keras" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(data)
    assert hub.keras_models_dir() == theirs.parent
    assert hub.download_url(url, md5=hashlib.md5(data).hexdigest(), **FAST) == theirs
    assert server.requests == []


# --------------------------------------------------------------------------------------------------
# What is refused, and the parsers
# --------------------------------------------------------------------------------------------------


def test_a_url_without_a_digest_is_refused_before_any_request(server):
    url = server.add("/resnet50-0676ba61.pth", b"x")
    with pytest.raises(WeightsError, match=r"pinned digest.*sha256='0676ba61'"):
        hub.download_url(url)
    with pytest.raises(WeightsError, match="not both|exactly one"):
        hub.download_url(url, sha256="0676ba61", md5="0" * 32)
    for bad in ("file:///etc/passwd", "ftp://127.0.0.1/x.pth", "javascript:alert(1)", "http:///x.pth"):
        with pytest.raises(WeightsError):
            hub.download_url(bad, sha256="0676ba61")
    assert server.requests == []


hex_digits = st.text(alphabet="0123456789abcdef", min_size=1, max_size=80)


@given(hex_digits, st.sampled_from(["", "sha256:", "SHA256:", "md5:"]))
def test_digest_parser_accepts_exactly_the_documented_forms(digits, prefix):
    text = prefix + digits
    algorithm = "md5" if prefix == "md5:" else "sha256" if prefix else {64: "sha256", 32: "md5"}.get(len(digits))
    allowed = 32 <= len(digits) <= 32 if algorithm == "md5" else algorithm == "sha256" and 8 <= len(digits) <= 64
    if allowed:
        digest = hub.Digest.parse(text)
        assert (digest.algorithm, digest.hexdigest) == (algorithm, digits)
        assert hub.Digest.parse(str(digest)) == digest
    else:
        with pytest.raises(WeightsError):
            hub.Digest.parse(text)


@given(st.binary(max_size=64))
def test_a_digest_matches_the_content_it_was_taken_from_only(data):
    full = hashlib.sha256(data).hexdigest()
    for digits in (8, 20, 64):
        digest = hub.Digest.parse(full[:digits], "sha256")
        assert digest.matches(full)
        assert not digest.matches(hashlib.sha256(data + b"!").hexdigest())


@given(st.text(alphabet="abcdef0123456789-._xyz", max_size=30))
def test_hash_prefix_in_a_file_name_is_read_as_torch_hub_reads_it(name):
    found = torch.hub.HASH_REGEX.search(name)
    expected = found.group(1) if found and len(found.group(1)) >= 8 else None
    assert hub.hash_prefix_in_file_name(name) == expected


file_names = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._+=-]{0,40}", fullmatch=True).filter(
    lambda n: not n.endswith((".partial", ".lock"))
)


@given(
    st.sampled_from(["http", "https", "HTTPS"]), st.sampled_from(["127.0.0.1:8080", "example.org", "[::1]"]), file_names
)
def test_url_parser_takes_the_last_path_segment(scheme, host, name):
    url = f"{scheme}://{host}/a/b%20c/{urllib.parse.quote(name)}?token=1#frag"
    assert hub.file_name_from_url(url) == name


@given(st.sampled_from(["ftp", "file", "data", "s3", ""]), file_names)
def test_url_parser_refuses_other_schemes(scheme, name):
    with pytest.raises(WeightsError, match="only http"):
        hub.file_name_from_url(f"{scheme}://host/{name}")


@pytest.mark.parametrize("tail", ["/", "/..", "/.hidden", "/x.pth.partial", "/x.pth.lock", "/a%2Fb", "/a%00b"])
def test_url_parser_refuses_names_unsafe_for_the_cache(tail):
    with pytest.raises(WeightsError, match="cache file name"):
        hub.file_name_from_url("https://example.org/dir" + tail)


def test_cache_locations_follow_the_environment(caches, monkeypatch):
    assert hub.weights_dir() == caches / "cnnzoo" / "weights"
    monkeypatch.delenv("CNNZOO_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(caches / "xdg"))
    assert hub.weights_dir() == caches / "xdg" / "cnnzoo" / "weights"
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(caches))
    assert hub.keras_models_dir() == caches / ".keras" / "models"
    assert re.search(r"torch[/\\]hub[/\\]checkpoints$", str(hub.torch_hub_checkpoints_dir()))
