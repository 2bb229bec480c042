"""Clustering scores on contingencies small enough to check by hand."""

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

from latentlab import metrics


def test_purity_and_acc_by_hand():
    # labels:   0 0 0 1 1 1
    # clusters: 0 0 1 1 1 1  -> cluster 0 = {0,0}, cluster 1 = {0,1,1,1}
    y = np.array([0, 0, 0, 1, 1, 1])
    c = np.array([0, 0, 1, 1, 1, 1])
    # purity: majority of cluster 0 is 2, of cluster 1 is 3 -> 5/6
    assert metrics.purity(y, c) == pytest.approx(5 / 6)
    # best matching 0->0, 1->1 gives 2 + 3 correct -> 5/6
    assert metrics.cluster_accuracy(y, c) == pytest.approx(5 / 6)


def test_acc_is_invariant_to_renaming_but_purity_is_not_acc():
    y = np.array([0, 0, 1, 1])
    assert metrics.cluster_accuracy(y, np.array([7, 7, 3, 3])) == 1.0
    # every point its own cluster: purity 1, but ACC can only match 2 clusters -> 2/4
    singletons = np.array([0, 1, 2, 3])
    assert metrics.purity(y, singletons) == 1.0
    assert metrics.cluster_accuracy(y, singletons) == 0.5


def test_one_cluster_for_everything():
    y = np.array([0, 1, 2, 0])
    one = np.zeros(4, dtype=int)
    assert metrics.purity(y, one) == 0.5
    assert metrics.cluster_accuracy(y, one) == 0.5
    assert metrics.scores(y, one)["nmi"] == 0.0


def test_nmi_and_ari_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, 300)
    c = np.where(rng.random(300) < 0.7, y, rng.integers(0, 5, 300))
    s = metrics.scores(y, c)
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(y, c))
    assert 0.4 < s["acc"] < 0.9
    assert set(s) == {"acc", "nmi", "ari", "purity"}


def test_contingency_orientation():
    t = metrics.contingency(np.array([0, 0, 1]), np.array([1, 1, 0]))
    assert t.tolist() == [[0, 2], [1, 0]]  # rows are labels, columns clusters


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(2,\)"):
        metrics.scores(np.array([0, 1, 1]), np.array([0, 1]))


def test_match_renames_cluster_ids_one_to_one():
    a = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    b = np.array([5, 5, 7, 9, 9, 7, 7, 5])  # 5 <-> 0, 9 <-> 1, 7 <-> 2
    assert metrics.match(a, b).tolist() == [0, 0, 2, 1, 1, 2, 2, 0]
    with pytest.raises(ValueError, match=r"shapes \(8,\) and \(3,\)"):
        metrics.match(a, b[:3])


def test_mistakes_are_the_largest_off_matching_cells_with_their_samples():
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([5, 5, 5, 7, 7, 7, 5, 9, 9, 7, 7])  # 5 -> 0, 7 -> 1, 9 -> 2
    found = metrics.mistakes(y_true, y_pred)
    assert [{k: v for k, v in f.items() if k != "index"} for f in found] == [
        {"true": 2, "as": 1, "n": 2}, {"true": 0, "as": 1, "n": 1}, {"true": 1, "as": 0, "n": 1}]
    assert found[0]["index"].tolist() == [9, 10] and found[1]["index"].tolist() == [3]
    assert metrics.mistakes(y_true, y_true) == []
    # a cluster no class is matched to (more clusters than classes): its members are all mistakes
    assert metrics.mistakes(np.array([0, 0, 1, 1]), np.array([3, 3, 4, 8]))[0]["as"] is None
