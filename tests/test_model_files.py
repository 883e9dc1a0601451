"""Model identity without torch: what `bbimg models` shows in a light install."""
import pickle
import zipfile

import pytest

from bbimg.model_files import DEFAULT_MODEL, find_weights, installed_models, training_facts


def test_shipped_model_facts_match_what_torch_reads():
    torch = pytest.importorskip("torch")  # noqa: F841
    from bbimg.models import load_model

    info, _ = load_model(DEFAULT_MODEL)
    facts = training_facts(find_weights(DEFAULT_MODEL))
    assert facts == {"step": info.step, "train_hours": pytest.approx(info.train_hours)}
    assert DEFAULT_MODEL in installed_models()


def test_facts_reader_builds_nothing_but_plain_values(tmp_path):
    """A weights file whose pickle names any other callable is not read (no code runs)."""
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps({"step": 3, "x": Evil()}))
    assert training_facts(path) == {}
    plain = tmp_path / "plain.pt"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("plain/data.pkl", pickle.dumps({"step": 7, "train_hours": 1.5}))
    assert training_facts(plain) == {"step": 7, "train_hours": 1.5}
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    assert training_facts(tmp_path / "broken.pt") == {}


def test_weights_digest_is_kept_on_disk_and_refreshed_when_the_file_changes(tmp_path, monkeypatch):
    """A digest is hashed once per file, then read from the cache while the file's size, times and
    inode stay; a rewrite (even of the same size and modification time) is hashed again."""
    import hashlib
    import os

    from bbimg import model_files

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"a" * 1000)
    first = model_files.weights_sha256(weights)
    assert first == hashlib.sha256(b"a" * 1000).digest()
    assert (tmp_path / "cache" / "bbimg" / "weights-sha256.json").is_file()

    model_files._sha_cache.clear()
    monkeypatch.setattr(hashlib, "sha256", lambda data: pytest.fail("hashed again"))
    assert model_files.weights_sha256(weights) == first  # from the disk cache
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    st = weights.stat()
    weights.write_bytes(b"b" * 1000)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: the ctime moved
    model_files._sha_cache.clear()
    assert model_files.weights_sha256(weights) == hashlib.sha256(b"b" * 1000).digest()


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'{"x": [1, 2, 3, 4, "zz"]}', b'{"/w.pt": 5}'])
def test_a_broken_digest_cache_is_ignored(tmp_path, monkeypatch, content):
    import hashlib

    from bbimg import model_files

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "cache" / "bbimg").mkdir(parents=True)
    (tmp_path / "cache" / "bbimg" / "weights-sha256.json").write_bytes(content)
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"c" * 10)
    model_files._sha_cache.clear()
    assert model_files.weights_sha256(weights) == hashlib.sha256(b"c" * 10).digest()


def test_an_unwritable_cache_still_gives_the_digest(tmp_path, monkeypatch):
    import hashlib

    from bbimg import model_files

    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # bbimg/ cannot be made under a file
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"d" * 10)
    model_files._sha_cache.clear()
    assert model_files.weights_sha256(weights) == hashlib.sha256(b"d" * 10).digest()
