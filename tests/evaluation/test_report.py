"""How the reports judge one method against another."""


def test_compare_calls_a_gap_only_beyond_the_larger_seed_std():
    from metauas.evaluation.report import compare

    model = {
        "metrics": {"I-AUROC": 1.0, "P-AP": 0.30, "P-AUPRO": 0.880},
        "std": {"I-AUROC": 0.0, "P-AP": 0.02, "P-AUPRO": 0.005},
    }
    lookup = {
        "metrics": {"I-AUROC": 1.0, "P-AP": 0.20, "P-AUPRO": 0.872},
        "std": {"I-AUROC": 0.0, "P-AP": 0.01, "P-AUPRO": 0.010},
    }
    assert compare(model, lookup) == {"I-AUROC": "tie at 100", "P-AP": "ahead", "P-AUPRO": "within spread"}
    assert compare(lookup, model)["P-AP"] == "behind"
    assert compare(model, {**lookup, "std": None})["P-AUPRO"] == "ahead"  # one run: no spread but the model's
