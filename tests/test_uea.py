"""The UEA/UCR tasks aeon ships (the 'uea' extra, installed by dev): shapes, classes and the archive's split, against
aeon's own arrays; standardisation by the training split only; the variable-length JapaneseVowels."""

import numpy as np
import pytest
import torch

aeon_datasets = pytest.importorskip("aeon.datasets")

from benchmarks.uea import UEA_TASKS, japanese_vowels_sequences, uea_task  # noqa: E402


@pytest.mark.parametrize("task,sizes,d,T,classes", [("japanese-vowels", (270, 370), 12, 25, 9),
                                                   ("basic-motions", (40, 40), 6, 100, 4),
                                                   ("gun-point", (50, 150), 1, 150, 2)])
def test_shapes_classes_and_split_are_the_archives(task, sizes, d, T, classes):
    data = uea_task(task)
    assert (data.x_train.shape, data.x_test.shape) == ((sizes[0], T, d), (sizes[1], T, d))
    assert data.n_classes == classes and data.x_train.dtype == torch.float32
    X, y = aeon_datasets.load_classification(UEA_TASKS[task], split="train")
    X_test, y_test = aeon_datasets.load_classification(UEA_TASKS[task], split="test")
    classes_sorted = sorted(set(y.tolist()))
    assert data.y_train.tolist() == [classes_sorted.index(c) for c in y.tolist()]
    assert data.y_test.tolist() == [classes_sorted.index(c) for c in y_test.tolist()]
    # the same values, transposed to (n, T, d) and standardised with the training statistics
    steps = np.transpose(X, (0, 2, 1)).reshape(-1, d)
    mean, std = steps.mean(0), steps.std(0)
    expected = (np.transpose(X_test, (0, 2, 1)) - mean) / np.where(std > 0, std, 1)
    np.testing.assert_allclose(data.x_test.numpy(), expected, rtol=1e-5, atol=1e-5)
    train = data.x_train.numpy().reshape(-1, d)
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)


def test_variable_length_japanese_vowels():
    train, y_train, test, y_test = japanese_vowels_sequences()
    assert len(train) == 270 and len(test) == 370 and y_train.max() == 8
    lengths = [s.shape[0] for s in train + test]
    assert min(lengths) == 7 and max(lengths) == 29 and all(s.shape[1] == 12 for s in train)
    X, _ = aeon_datasets.load_classification("JapaneseVowels", split="train")
    assert [s.shape[0] for s in train] == [x.shape[1] for x in X]
    # the variable-length sequences prune directly
    from pruning import spectral_prune

    torch.manual_seed(0)
    rnn, head = torch.nn.GRU(12, 16, batch_first=True), torch.nn.Linear(16, 9)
    res = spectral_prune((rnn, head), train, k=8)
    assert res.covariance.count == sum(s.shape[0] for s in train)


def test_unknown_tasks_are_refused():
    with pytest.raises(ValueError, match="task: expected one of"):
        uea_task("ecg")
