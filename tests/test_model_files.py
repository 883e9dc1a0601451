"""Model identity without torch: what `bbimg models` shows in a light install."""
import io
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
