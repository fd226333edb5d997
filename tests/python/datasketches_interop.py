"""Floe's sketches read, made and merged by Apache DataSketches for Python (PyPI `datasketches`).

Run by tests/integration/sketches.rs with one argument: a JSON file holding Floe's serialised
sketches (hex) and the integers to sketch here. Prints one JSON object on stdout:

- python_hll: an HLL sketch (lg_k 12, HLL_4) of `ints`, each updated as a Python int, hex
- python_union: the estimate of the union of Floe's HLL sketch and that one, made here
- floe_hll_estimate: Floe's HLL sketch's estimate, read here
- top: Floe's frequent items sketch of strings, read here: item -> [estimate, lower, upper]
- kll_n, kll_quantiles: Floe's KLL sketch of doubles, read here: n and the inclusive quantiles
  at `ranks`
"""

import json
import sys

import datasketches as ds


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        given = json.load(f)

    floe_hll = ds.hll_sketch.deserialize(bytes.fromhex(given["floe_hll"]))
    python_hll = ds.hll_sketch(12, ds.tgt_hll_type.HLL_4)
    for value in given["ints"]:
        python_hll.update(int(value))
    union = ds.hll_union(12)
    union.update(floe_hll)
    union.update(python_hll)

    top = ds.frequent_strings_sketch.deserialize(bytes.fromhex(given["floe_top"]))
    items = {
        row[0]: [row[1], row[2], row[3]]
        for row in top.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
    }

    kll = ds.kll_doubles_sketch.deserialize(bytes.fromhex(given["floe_kll"]))
    quantiles = [kll.get_quantile(rank, True) for rank in given["ranks"]]

    print(
        json.dumps(
            {
                "python_hll": python_hll.serialize_compact().hex(),
                "python_union": union.get_estimate(),
                "floe_hll_estimate": floe_hll.get_estimate(),
                "top": items,
                "kll_n": kll.n,
                "kll_quantiles": quantiles,
            }
        )
    )


if __name__ == "__main__":
    main()
