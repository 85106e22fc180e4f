"""Draw the bundled TREC DL sample: up to 3 passages per query and relevance grade, seed 2025.

Usage: python scripts/make_sample.py ../shared/data/trec-dl-passages.jsonl.gz mechir_axioms/data/trec-dl-sample.jsonl.gz
"""

import gzip
import json
import random
import sys
from collections import defaultdict


def main(source: str, target: str) -> None:
    groups = defaultdict(list)
    with gzip.open(source, "rt") as handle:
        for line in handle:
            row = json.loads(line)
            groups[row["qid"], row["relevance"]].append(row)
    rng = random.Random(2025)
    sample = []
    for key in sorted(groups):
        rows = sorted(groups[key], key=lambda row: row["docno"])
        sample.extend(rng.sample(rows, min(3, len(rows))))
    with gzip.GzipFile(target, "wb", mtime=0) as raw:
        raw.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in sample).encode())
    print(f"{len(sample)} pairs from {len({row['qid'] for row in sample})} queries -> {target}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
