"""The speaker-independent motion prior: its space, its closed-form fit, its file (shipped and made by
`gstalk prior train`), a person's readout and retarget, and the sync check that uses it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from gstalk.config import WhisperConfig
from gstalk.errors import GstalkError
from gstalk.face.mesh import N_MESH, lower_face_weights, mouth_gap
from gstalk.speech import build_spec
from gstalk.speech.person import PersonMotion, basis_from_prior, geometric_retarget
from gstalk.speech.prior import (
    BUILTIN_SHA256,
    MotionPrior,
    PriorInfo,
    PriorShape,
    builtin_path,
    file_sha256,
    load_prior,
    save_prior,
)
from gstalk.speech.space import Normalisation, PriorSpace, motion_of, normalisation
from gstalk.train.person import fit_readout_toward_prior
from gstalk.train.prior import Sums, fit_readout, fold_of_people


def _face(seed: int = 0) -> np.ndarray:
    """A (468, 3) point set in a face's box (head frame, metres, y down), the inner lips and nose tip
    placed where a face has them."""
    rng = np.random.default_rng(seed)
    base = np.zeros((N_MESH, 3))
    base[:, 0] = rng.uniform(-0.07, 0.07, N_MESH)
    base[:, 1] = rng.uniform(-0.09, 0.09, N_MESH)
    base[:, 2] = rng.uniform(-0.02, 0.02, N_MESH)
    base[13] = [0.0, 0.03, -0.01]  # the inner lips, one above the other
    base[14] = [0.0, 0.035, -0.01]
    base[1] = [0.0, 0.0, -0.03]  # nose tip above the lips (y down)
    return base


def _motions(n: int, seed: int, rank: int = 3) -> np.ndarray:
    """(n, 468, 3) motions made of ``rank`` fixed modes (the same for every seed) with random weights."""
    modes = np.random.default_rng(100).standard_normal((rank, N_MESH, 3)) * 0.1
    return np.einsum("tr,rnc->tnc", np.random.default_rng(seed).standard_normal((n, rank)), modes)


def test_space_round_trip_and_gap_direction():
    face = _face()
    weights = lower_face_weights(face)
    motions = [_motions(200, s) for s in range(3)]
    space = PriorSpace.fit(motions, weights, [0.003, 0.004, 0.005], components=6)
    assert float(space.amplitude) == pytest.approx(0.004)
    x = torch.from_numpy(motions[0][:10]).float()
    z = space.project(x)
    back = space.reconstruct(z)
    lower = torch.from_numpy(weights > 0)
    # the motions are made of 3 modes: 6 components say all of it where the space looks (the lower face)
    err = ((back - x)[:, lower] ** 2).sum() / (x[:, lower] ** 2).sum()
    assert err < 1e-8
    # the gap direction is the linear part of the lips' vertical distance
    z0 = torch.zeros(6)
    dz = torch.zeros(6)
    dz[0] = 1e-3
    d_gap = (space.reconstruct(z0 + dz) - space.reconstruct(z0))[..., 14, 1] - (
        space.reconstruct(z0 + dz) - space.reconstruct(z0)
    )[..., 13, 1]
    assert float(d_gap) == pytest.approx(float(space.gap_direction()[0] * 1e-3), rel=1e-4)


def test_normalisation_takes_the_closed_mouth_as_rest():
    face = _face()
    t = np.arange(100)
    mesh = np.repeat(face[None], 100, 0)
    opening = 0.01 * (1 + np.sin(t / 5))  # 0 … 2 cm
    mesh[:, 14, 1] += opening
    norm = normalisation(mesh, np.ones(100, bool), lower_face_weights(face))
    assert mouth_gap(norm.rest) < mouth_gap(face) + 0.002  # near the most closed frames
    motion = motion_of(mesh, norm)
    assert np.allclose(motion[:, 13], 0) and np.corrcoef(motion[:, 14, 1], opening)[0, 1] > 0.999


def test_the_readout_from_sums_is_the_ridge_solution():
    """fit_readout from accumulated sums equals ridge regression on the standardised rows written out."""
    rng = np.random.default_rng(1)
    window, channels, k = 2, 3, 4
    face = _face()
    weights = lower_face_weights(face)
    n = 400
    motions = _motions(n, 2, rank=5)
    space = PriorSpace.fit([motions], weights, [0.003], components=k)
    feats = rng.standard_normal((n, window, channels)) * [2.0, 0.5, 1.0] + 3.0
    targets = motions.astype(np.float32)
    usable = rng.random(n) > 0.1
    ref = feats.reshape(n, -1).mean(0) + 0.1
    sums = Sums(window * channels, ref)
    sums.add(feats[: n // 2], targets[: n // 2], usable[: n // 2], chunk=37)
    other = Sums(window * channels, ref)
    other.add(feats[n // 2 :], targets[n // 2 :], usable[n // 2 :])
    prior = fit_readout(sums + other, space, ridge=5.0, window=window, channels=channels)
    x = feats[usable].reshape(usable.sum(), -1)
    xs = (x - x.mean(0)) / x.std(0)
    z = space.project(torch.from_numpy(targets[usable])).double().numpy()
    w = np.linalg.solve(xs.T @ xs + 5.0 * np.eye(xs.shape[1]), xs.T @ (z - z.mean(0)))
    pred = prior.predict(feats[usable].astype(np.float32)).double().numpy()
    assert np.allclose(pred, xs @ w + z.mean(0), atol=1e-4)


def test_folds_split_people_never_clips():
    @dataclasses.dataclass
    class Clip:
        identity: str
        seconds: float

    clips = [Clip("a", 60), Clip("b", 30), Clip("b", 30), Clip("c", 10), Clip("d", 10), Clip("e", 5)]
    folds = fold_of_people(clips, 3)
    assert set(folds) == {"a", "b", "c", "d", "e"} and set(folds.values()) == {0, 1, 2}
    assert folds["a"] != folds["b"]  # the two largest people never share a fold


def _tiny_prior(k: int = 4, window: int = 2, channels: int = 3) -> MotionPrior:
    face = _face()
    space = PriorSpace.fit([_motions(300, 5, rank=k)], lower_face_weights(face), [0.004], components=k)
    spec = build_spec("whisper", WhisperConfig())
    prior = MotionPrior(PriorInfo(PriorShape(window, channels, k), spec, {"people": 2}, {"mean": 0.5}))
    prior.space.load_state_dict(space.state_dict())
    with torch.no_grad():
        prior.readout.weight.copy_(torch.randn(k, window * channels))
        prior.gain.fill_(1.5)
    return prior


def test_a_prior_file_round_trips_and_damage_is_a_clear_error(tmp_path: Path):
    prior = _tiny_prior()
    path = save_prior(tmp_path / "p.safetensors", prior)
    again = load_prior(path)
    assert again.info == prior.info
    for name, value in prior.state_dict().items():
        assert torch.equal(again.state_dict()[name], value)
    (tmp_path / "folder").mkdir()
    save_prior(tmp_path / "folder" / "prior.safetensors", prior)
    assert load_prior(tmp_path / "folder").info == prior.info  # a folder means its prior.safetensors
    assert load_prior("none") is None and load_prior(None) is None
    with pytest.raises(GstalkError, match="no motion prior at"):
        load_prior(tmp_path / "nowhere.safetensors")
    data = bytearray(path.read_bytes())
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(GstalkError, match="not a readable gstalk motion prior"):
        load_prior(cut)
    data[-5] ^= 0xFF  # a bit of a weight flipped
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(data))
    with pytest.raises(GstalkError, match="has been altered"):
        load_prior(flipped)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(3)}, str(foreign))
    with pytest.raises(GstalkError, match="not a readable gstalk motion prior"):
        load_prior(foreign)


def test_the_shipped_prior_loads_checks_and_fits_the_default_features():
    path = builtin_path()
    assert path.is_file(), "the motion prior must ship inside the package (pip install -e .)"
    assert path.stat().st_size <= 20e6
    assert BUILTIN_SHA256 and file_sha256(path) == BUILTIN_SHA256
    prior = load_prior("builtin")
    assert prior.check_features(build_spec("whisper", WhisperConfig())) is None
    assert prior.info.corpus["people"] >= 20 and prior.info.figures["mean_correlation"] > 0.5
    assert (path.parent / "MODEL_CARD.md").is_file()
    other = build_spec("whisper", dataclasses.replace(WhisperConfig(), states=4))
    assert "4 states" in prior.check_features(other)
    assert "Whisper" in prior.check_features(build_spec("logmel"))


def test_an_altered_or_missing_shipped_prior_is_refused(monkeypatch, tmp_path: Path):
    from gstalk.speech import prior as prior_module

    monkeypatch.setattr(prior_module, "BUILTIN_SHA256", "0" * 64)
    with pytest.raises(GstalkError, match="altered") as err:
        load_prior("builtin")
    assert "reinstall gstalk" in err.value.fix
    monkeypatch.setattr(prior_module, "builtin_path", lambda: tmp_path / "gone.safetensors")
    with pytest.raises(GstalkError, match="shipped with gstalk is missing"):
        load_prior("builtin")


def test_the_geometric_retarget_places_the_priors_motion_on_the_face():
    """Codes from the retarget reconstruct rest + amplitude · motion (minus the canonical) wherever the
    person's basis can say it: for a basis made from the prior itself, exactly, and the codes are the
    prior's coefficients."""
    prior = _tiny_prior()
    face = _face(3)
    norm = Normalisation(face + 0.001, 0.005)
    basis = basis_from_prior(prior.space, norm, face)
    matrix, offset = geometric_retarget(prior.space, basis, norm, face)
    z = torch.randn(7, prior.space.components)
    codes = z @ matrix.T + offset
    assert torch.allclose(codes, z, atol=1e-4)
    placed = torch.from_numpy(norm.rest - face).float() + norm.amplitude * prior.space.reconstruct(z)
    lower = basis.vertex_weights > 0
    assert torch.allclose(basis.reconstruct(codes)[:, lower], placed[:, lower], atol=1e-6)


def test_a_person_readout_moves_toward_the_clip_as_far_as_the_ridge_lets_it():
    from gstalk.train.audio_motion import MotionData

    prior = _tiny_prior()
    rng = np.random.default_rng(4)
    feats = rng.standard_normal((500, 2, 3)).astype(np.float32)
    targets = (feats.reshape(500, -1) @ rng.standard_normal((6, 4)) * 1.5 + 0.3).astype(np.float32)
    data = MotionData([feats], [targets], [np.ones(500, bool)])
    stiff = PersonMotion(prior.info.shape, 6)
    stiff.start_from(prior)
    fit_readout_toward_prior(stiff, data, ridge=1e12)
    assert torch.allclose(stiff.readout.weight, prior.readout.weight, atol=1e-5)
    loose = PersonMotion(prior.info.shape, 6)
    loose.start_from(prior)
    fit_readout_toward_prior(loose, data, ridge=1e-6)
    assert np.allclose(loose.motion(torch.from_numpy(feats)).double().numpy(), targets, atol=1e-3)


def test_person_motion_predicts_frame_by_frame():
    """No temporal context without a residual: any segment's codes are those of the whole input (a stream
    gives the file's codes)."""
    prior = _tiny_prior()
    person = PersonMotion(prior.info.shape, 5)
    person.start_from(prior)
    person.set_retarget(torch.randn(5, 4), torch.randn(5))
    feats = np.random.default_rng(0).standard_normal((60, 2, 3)).astype(np.float32)
    whole = person.predict(feats)
    assert torch.allclose(person.predict(feats[20:35]), whole[20:35], atol=1e-6)
    assert person.past == 0 and person.future == 0


def _tiny_run(dataset: Path, out: Path, prior: str) -> Path:
    from gstalk.config import AudioMotionConfig, TrainConfig
    from gstalk.train import train

    return train(TrainConfig(dataset=dataset, out=out, size=64, max_gaussians=400, iterations=(10, 10, 5),
                             progress=False, prior=prior,
                             audio_motion=AudioMotionConfig(steps=30, augmented_copies=1)))  # fmt: skip


def test_runs_with_and_without_the_prior_train_save_load_and_render(demo_dataset: Path, tmp_path: Path):
    """The default run starts from the shipped prior (its readout and retarget kept in the run); --prior
    none trains the per-person network as every run before the prior did, and such a run loads and
    renders as before; a prior that does not fit the dataset is an error naming the fix."""
    import json

    from gstalk.drive import Driver
    from gstalk.model.checkpoint import load_model
    from gstalk.speech.motion import AudioMotion

    with_prior = _tiny_run(demo_dataset, tmp_path / "with", "builtin")
    without = _tiny_run(demo_dataset, tmp_path / "without", "none")
    model, meta = load_model(with_prior / "model")
    assert isinstance(model.motion, PersonMotion) and meta["model"]["motion_prior"]["window"] == 8
    readout = model.motion.readout.weight
    assert not torch.equal(readout, load_prior("builtin").readout.weight)  # moved toward the clip
    old, old_meta = load_model(without / "model")
    assert isinstance(old.motion, AudioMotion) and old_meta["model"]["motion_prior"] is None
    figures = json.loads((with_prior / "audio_motion.json").read_text())
    assert np.isfinite(figures["gap_correlation"])
    audio = np.random.default_rng(0).standard_normal(16_000).astype(np.float32) * 0.05
    for run in (with_prior, without):
        driver = Driver(run, size=64)
        frames = list(driver.render(driver.speech(audio)))
        assert len(frames) == 25 and frames[0].shape == (64, 64, 3)
    other = save_prior(tmp_path / "other.safetensors", _tiny_prior())
    with pytest.raises(GstalkError, match="does not fit this dataset"):
        _tiny_run(demo_dataset, tmp_path / "other", str(other))


def test_few_shot_trains_on_the_first_seconds_keeps_the_tail_and_picks_its_preset(
    demo_clip: Path, tmp_path: Path, capsys
):
    """prepare --seconds S trains on the clip's first S seconds and keeps the same held-out tail as
    without it; --preset auto picks few under 15 s of training frames (and cpu from it on), says so in
    the log, and fills only what the user left unset."""
    from gstalk.config import PRESETS, PrepareConfig, TrainConfig, auto_preset, resolve_train
    from gstalk.data.dataset import load_dataset
    from gstalk.prepare import prepare
    from gstalk.prepare.pipeline import _splits

    valid = np.ones(100, bool)
    valid[3] = False
    whole = PrepareConfig(video=demo_clip, out=tmp_path / "x")
    train_all, test_all = _splits(whole, 100, valid)
    train_2s, test_2s = _splits(dataclasses.replace(whole, seconds=2.0), 100, valid)
    assert np.array_equal(test_2s, test_all) and test_all[0] > train_all[-1]
    assert np.array_equal(train_2s, [k for k in range(50) if k != 3])

    assert auto_preset(10.0) == "few" and auto_preset(15.0) == "cpu" and auto_preset(None) == "cpu"
    base = TrainConfig(dataset=tmp_path, out=tmp_path / "run")
    few = resolve_train(base, 10.0)
    assert few.preset == "few" and few.max_gaussians == PRESETS["few"]["max_gaussians"]
    assert (few.static.iterations, few.motion.iterations, few.fusion.iterations) == PRESETS["few"][
        "iterations"
    ]
    assert resolve_train(base, 60.0).preset == "cpu"
    assert resolve_train(dataclasses.replace(base, max_gaussians=123), 10.0).max_gaussians == 123

    ds = prepare(PrepareConfig(video=demo_clip, out=tmp_path / "ds", size=64, seconds=2.0, progress=False))
    loaded = load_dataset(ds)
    assert len(loaded.train_ids) <= 50 and loaded.train_ids.max() < 50
    assert loaded.test_ids.min() >= loaded.n_frames - round(loaded.n_frames * whole.test_fraction)
    capsys.readouterr()
    _tiny_run(ds, tmp_path / "run", "builtin")
    assert "gstalk train: preset few: " in capsys.readouterr().err


@pytest.mark.slow
def test_prior_train_makes_resumes_and_refuses_to_replace_what_it_did_not_make(tmp_path: Path, capsys):
    """`gstalk prior train` on a corpus of three generated people: a loadable prior with its model card,
    config and leave-person-out figures; a second run with the same config does nothing; --overwrite
    replaces only a prior it made."""
    import json

    from gstalk.config import PriorTrainConfig
    from gstalk.demo import make_demo_subject
    from gstalk.train.prior import train_prior

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed, person in enumerate(("ann", "bob", "cy")):
        make_demo_subject(corpus / f"{person}_en_3s.mp4", seconds=3.0, seed=seed + 1)
    out = tmp_path / "prior"
    config = PriorTrainConfig(corpus=corpus, out=out, folds=3, augmented_copies=1, progress=False)
    train_prior(config)
    prior = load_prior(str(out))
    assert prior.check_features(build_spec("whisper", WhisperConfig())) is None
    assert (out / "MODEL_CARD.md").is_file() and (out / "config.json").is_file()
    figures = json.loads((out / "figures.json").read_text())
    assert set(figures["folds"]) == {"ann", "bob", "cy"} and len(figures["clips"]) == 3
    capsys.readouterr()
    train_prior(dataclasses.replace(config, progress=True))
    assert "nothing to do" in capsys.readouterr().err
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(GstalkError, match="not a gstalk motion prior"):
        train_prior(dataclasses.replace(config, out=other, overwrite=True))
    assert (other / "notes.txt").read_text() == "mine"
