"""The built-in digits model (`rexjax.models.pretrained`): the committed checkpoint against
diffusers, the API's shapes and dtypes, the classifier, and sampling that produces the asked-for
digits."""

import jax


jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from model_helpers import rel_err  # noqa: E402

import rexjax as rx  # noqa: E402
import rexjax.models as rm  # noqa: E402
from rexjax.models import pretrained  # noqa: E402


def test_constants_and_test_split():
    assert pretrained.NULL_LABEL == 10
    assert pretrained.IMAGE_SHAPE == (1, 16, 16)
    assert (pretrained.CHECKPOINT_DIR / "digits" / "config.json").is_file()
    images, labels = pretrained.digits_test_split()
    assert images.shape == (360, 1, 16, 16) and images.dtype == np.float32
    assert labels.shape == (360,) and labels.dtype == np.int32
    assert images.min() == -1.0 and images.max() == 1.0
    assert np.array_equal(np.unique(labels), np.arange(10))
    assert np.bincount(labels).min() >= 35  # stratified


def test_preprocessing():
    from rexjax.models._digits import preprocess_digits

    pixels = np.arange(64, dtype=np.float64).reshape(1, 8, 8) % 17
    x = preprocess_digits(pixels)
    assert x.shape == (1, 1, 16, 16) and x.dtype == np.float32
    # Bilinear 2x keeps the mean intensity (edges are clamped symmetrically).
    np.testing.assert_allclose(x.mean(), (pixels / 8 - 1).mean(), rtol=0, atol=0.02)
    # Output pixel (2i, 2j) = 3/4 x_i + 1/4 x_{i-1} per axis (here i = j = 3).
    p = pixels[0] / 8 - 1
    row = 0.75 * p[3] + 0.25 * p[2]
    expected = 0.75 * row[3] + 0.25 * row[2]
    np.testing.assert_allclose(x[0, 0, 6, 6], expected, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(n, 8, 8\)"):
        preprocess_digits(np.zeros((2, 16, 16)))


def test_unet_and_term():
    unet = pretrained.digits_unet()
    assert unet.num_class_embeds == 11 and unet.config.in_channels == 1
    images, labels = pretrained.digits_test_split()
    x = jnp.asarray(images[:4])
    out = eqx.filter_jit(lambda u, x, y: u(x, 500.0, class_labels=y))(unet, x, labels[:4])
    assert out.shape == (4, 1, 16, 16) and out.dtype == jnp.float32
    term = pretrained.digits_term()
    assert isinstance(term, rx.DiffusionTerm) and term.model_type == "noise"
    assert term.schedule.t_min == pytest.approx(1e-3)
    guided = pretrained.digits_term(guidance_scale=2.0)
    assert guided.model.guidance_scale == 2.0 and guided.model.null_label == 10


def test_checkpoint_matches_diffusers():
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    folder = pretrained.CHECKPOINT_DIR / "digits"
    model = diffusers.UNet2DModel.from_pretrained(folder).eval()
    assert model.config.num_class_embeds == 11
    scheduler = diffusers.DDPMScheduler.from_pretrained(folder, subfolder="scheduler")
    assert scheduler.config.prediction_type == "epsilon"
    assert scheduler.config.beta_schedule == "linear"
    images, labels = pretrained.digits_test_split()
    rng = np.random.default_rng(0)
    x = (0.6 * images[:6] + 0.8 * rng.standard_normal(images[:6].shape)).astype(np.float32)
    t = np.array([0, 10, 250, 500, 750, 999])
    y = np.array([0, 3, 5, 7, 9, 10])
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(t), class_labels=torch.from_numpy(y))
    unet = pretrained.digits_unet()
    out = eqx.filter_jit(lambda u, x, t, y: u(x, t, class_labels=y))(
        unet, x, t.astype(np.float32), y
    )
    err = rel_err(out, ref.sample.numpy())
    print(f"digits checkpoint vs diffusers: max relative error {err:.2e}")
    assert err < 2e-6


def test_classifier():
    classifier = pretrained.digits_classifier()
    images, labels = pretrained.digits_test_split()
    feats = classifier.features(images)
    logits = classifier.logits(images)
    assert feats.shape == (360, 64) and feats.dtype == jnp.float32
    assert logits.shape == (360, 10)
    accuracy = float(jnp.mean(classifier.predict(images) == labels))
    print(f"classifier test accuracy {accuracy:.4f}")
    assert accuracy >= 0.95
    with pytest.raises(ValueError, match=r"\(n, 1, 16, 16\)"):
        classifier.logits(images[:, 0])


def test_frechet_distance():
    from rexjax.models._fd import feature_statistics, frechet_distance

    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    mu, cov = feature_statistics(a)
    assert frechet_distance(mu, cov, mu, cov) == pytest.approx(0.0, abs=1e-9)
    # Closed form for commuting covariances: |dmu|^2 + sum (sqrt(s1) - sqrt(s2))^2.
    s1, s2 = np.diag([1.0, 4.0, 9.0]), np.diag([4.0, 1.0, 9.0])
    d = frechet_distance(np.zeros(3), s1, np.ones(3), s2)
    assert d == pytest.approx(3.0 + 1.0 + 1.0, rel=1e-12)


def test_sampling_gives_the_asked_digits():
    """20 guided DDIM samples (2 per class, 20 steps): the classifier recognises most as the
    class they were asked for (chance is 10%)."""
    term = pretrained.digits_term(guidance_scale=2.0)
    labels = jnp.repeat(jnp.arange(10, dtype=jnp.int32), 2)
    noise = jax.random.normal(jax.random.key(0), (20, *pretrained.IMAGE_SHAPE), jnp.float32)
    ts = rx.log_snr_grid(term.schedule, 1.0, term.schedule.t_min, 20).astype(jnp.float32)
    solver = rx.Princeps(diffrax.Euler(), "data")
    x = eqx.filter_jit(rx.sample)(term, solver, noise, ts, labels)
    accuracy = float(jnp.mean(pretrained.digits_classifier().predict(x) == labels))
    print(f"20-step guided DDIM samples: class accuracy {accuracy:.2f}")
    assert accuracy >= 0.7


def test_package_data_in_wheel():
    """The checkpoints are package data: hatch ships every file under rexjax/."""
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(rm.__file__).parents[2] / "pyproject.toml").read_text())
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["rexjax"]
    for name in ("digits_test.safetensors", "digits_classifier.safetensors"):
        assert (pretrained.CHECKPOINT_DIR / name).is_file()
