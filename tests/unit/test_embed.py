import numpy as np
import pytest
import scipy.spatial

from lesion._errors import LesionError
from lesion.embed import (
    INPUT,
    horizontal_reduction,
    neighbourhood_hit,
    neighbourhood_hit_per_class,
    procrustes_align,
    tsne,
    umap_embed,
    vertical_reduction,
)


def clusters(n_per_class: int = 30, dim: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well separated Gaussian blobs and their labels."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, dim) * 20
    x = np.concatenate([rng.normal(size=(n_per_class, dim)) + c for c in centres])
    return x, np.repeat(np.arange(3), n_per_class)


# --- procrustes_align --------------------------------------------------------------------


@pytest.mark.parametrize("reflect", [False, True])
def test_procrustes_recovers_known_similarity_transform(reflect):
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(40, 2))
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    if reflect:
        rotation = rotation @ np.diag([1.0, -1.0])
    # reference = 2.5 * moving @ rotation + (3, -1)  <=>  moving = (reference - t) @ R.T / 2.5
    moving = (reference - [3.0, -1.0]) @ rotation.T / 2.5
    result = procrustes_align(reference, moving)
    np.testing.assert_allclose(result.embedding, reference, atol=1e-6)
    assert result.scale == pytest.approx(2.5, abs=1e-6)
    np.testing.assert_allclose(result.rotation, rotation, atol=1e-6)
    np.testing.assert_allclose(result.translation, [3.0, -1.0], atol=1e-6)
    assert result.disparity == pytest.approx(0.0, abs=1e-12)


def test_procrustes_disparity_matches_scipy_and_stays_in_reference_frame():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(30, 2)) * 4 + 10
    moving = rng.normal(size=(30, 2))
    result = procrustes_align(reference, moving)
    assert result.disparity == pytest.approx(scipy.spatial.procrustes(reference, moving)[2])
    # least squares with a free translation: residuals have zero mean, so the aligned
    # points share the reference's centroid (not scipy's standardised origin)
    np.testing.assert_allclose(result.embedding.mean(axis=0), reference.mean(axis=0))
    residual = ((reference - result.embedding) ** 2).sum() / (
        (reference - reference.mean(0)) ** 2
    ).sum()
    assert result.disparity == pytest.approx(residual)


def test_procrustes_rejects_degenerate_and_mismatched_input():
    with pytest.raises(LesionError, match=r"^moving: expected points with some spread"):
        procrustes_align(np.arange(6.0).reshape(3, 2), np.ones((3, 2)))
    with pytest.raises(
        LesionError, match=r"^moving: expected a non-empty matrix of shape \(3, d\)"
    ):
        procrustes_align(np.zeros((3, 2)), np.zeros((4, 2)))


# --- neighbourhood hit -------------------------------------------------------------------

# Seven points on a line (no distance ties), k = 2:
#   point  x    label  2 nearest (distance)       same label
#   p0     0    A      p1 (1), p2 (2.4)            1/2
#   p1     1    A      p0 (1), p2 (1.4)            1/2
#   p2     2.4  B      p1 (1.4), p3 (1.6)          0
#   p3     4    A      p4 (0.6), p2 (1.6)          0
#   p4     4.6  B      p3 (0.6), p2 (2.2)          1/2
#   p5     7    B      p6 (0.5), p4 (2.4)          1
#   p6     7.5  B      p5 (0.5), p4 (2.9)          1
# mean 3.5 / 7 = 0.5; class A (p0, p1, p3) 1/3; class B (p2, p4, p5, p6) 2.5 / 4
LINE = np.array(
    [[0.0, 0.0], [1.0, 0.0], [2.4, 0.0], [4.0, 0.0], [4.6, 0.0], [7.0, 0.0], [7.5, 0.0]]
)
LINE_LABELS = np.array(["A", "A", "B", "A", "B", "B", "B"])


def test_neighbourhood_hit_by_hand():
    assert neighbourhood_hit(LINE, LINE_LABELS, k=2) == pytest.approx(0.5)
    # k = 1: nearest neighbours p1, p0, p1, p4, p3, p6, p5 -> hits 1, 1, 0, 0, 0, 1, 1
    assert neighbourhood_hit(LINE, LINE_LABELS, k=1) == pytest.approx(4 / 7)


def test_neighbourhood_hit_per_class_by_hand():
    table = neighbourhood_hit_per_class(LINE, LINE_LABELS, k=2)
    assert table["class"].tolist() == ["A", "B"]
    np.testing.assert_allclose(table["neighbourhood_hit"], [1 / 3, 2.5 / 4])
    assert table["n_points"].tolist() == [3, 4]


def test_neighbourhood_hit_never_counts_the_point_itself():
    # each point's only other copy carries the other label: with k = 1 nothing is a hit
    points = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    assert neighbourhood_hit(points, [0, 1, 0, 1], k=1) == 0.0


@pytest.mark.parametrize(
    ("k", "message"), [(7, r"^k: expected an integer in 1\.\.6"), (0, r"^k: ")]
)
def test_neighbourhood_hit_rejects_bad_k(k, message):
    with pytest.raises(LesionError, match=message):
        neighbourhood_hit(LINE, LINE_LABELS, k=k)


# --- t-SNE -------------------------------------------------------------------------------


def test_tsne_is_deterministic_and_separates_blobs():
    x, labels = clusters()
    first = tsne(x, seed=0, perplexity=10)
    assert first.shape == (90, 2) and first.dtype == np.float32
    np.testing.assert_array_equal(first, tsne(x, seed=0, perplexity=10))
    assert neighbourhood_hit(first, labels) == 1.0


def test_tsne_rejects_too_large_perplexity():
    with pytest.raises(LesionError, match=r"^perplexity: expected a value in \(0, 5\)"):
        tsne(np.random.default_rng(0).normal(size=(5, 3)))


# --- UMAP and the reductions (numba compiles on the first UMAP call: slow) ---------------


@pytest.mark.slow
def test_umap_is_deterministic_separates_blobs_and_takes_an_init():
    x, labels = clusters()
    first = umap_embed(x, seed=0)
    assert first.shape == (90, 2) and first.dtype == np.float32
    np.testing.assert_array_equal(first, umap_embed(x, seed=0))
    assert neighbourhood_hit(first, labels) == 1.0
    started = umap_embed(x, seed=0, init=first[::-1].copy())
    assert not np.array_equal(started, first)
    with pytest.raises(LesionError, match=r"^init: expected a non-empty matrix of shape \(90, d\)"):
        umap_embed(x, init=first[:10])
    with pytest.raises(LesionError, match=r"^n_neighbors: expected an integer in 2\.\.89"):
        umap_embed(x, n_neighbors=90)


@pytest.mark.slow
def test_horizontal_reduction_is_aligned_layer_by_layer_and_deterministic():
    raw, labels = clusters(n_per_class=25, dim=8)
    layers = {
        "fc1": np.tanh(raw @ np.random.default_rng(1).normal(size=(8, 12))),
        "out": raw[:, :3],
    }
    result = horizontal_reduction(layers, raw, seed=0)
    assert list(result) == [INPUT, "fc1", "out"]
    assert all(e.shape == (75, 2) and e.dtype == np.float32 for e in result.values())
    # each layer is already aligned to the one before: aligning again changes nothing
    for previous, name in ((INPUT, "fc1"), ("fc1", "out")):
        again = procrustes_align(result[previous], result[name])
        assert again.scale == pytest.approx(1.0, abs=1e-4)
        np.testing.assert_allclose(again.rotation, np.eye(2), atol=1e-4)
    repeat = horizontal_reduction(layers, raw, seed=0)
    for name, embedding in result.items():
        np.testing.assert_array_equal(embedding, repeat[name])
    assert neighbourhood_hit(result["out"], labels) == 1.0


def test_horizontal_reduction_reserves_the_input_name():
    with pytest.raises(
        LesionError, match=r"^layer_activations: expected layer names other than 'input'"
    ):
        horizontal_reduction({"input": np.zeros((5, 2))}, np.zeros((5, 2)))


@pytest.mark.slow
def test_vertical_reduction_embeds_neurons_by_response():
    rng = np.random.default_rng(0)
    n_samples = 200
    drive = rng.uniform(size=(n_samples, 2))
    # 30 neurons follow drive 0, 30 follow drive 1 (with small noise): two populations
    activations = np.concatenate(
        [
            drive[:, [0]] + 0.01 * rng.normal(size=(n_samples, 30)),
            drive[:, [1]] + 0.01 * rng.normal(size=(n_samples, 30)),
        ],
        axis=1,
    )
    population = np.repeat([0, 1], 30)
    embedded = vertical_reduction(activations, seed=0)
    assert embedded.shape == (60, 2)
    assert neighbourhood_hit(embedded, population) == 1.0
    subsampled = vertical_reduction(activations, seed=0, max_samples=50)
    np.testing.assert_array_equal(
        subsampled, vertical_reduction(activations, seed=0, max_samples=50)
    )
    assert neighbourhood_hit(subsampled, population) == 1.0
