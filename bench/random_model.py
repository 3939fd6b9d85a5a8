"""Save a ModernBERT with seeded random weights and the stand-in tokenizer as a model folder, for timing the
scripts themselves (train.py, the sweep) where no real checkpoint can be fetched.

    python bench/random_model.py --shape large --output_dir /tmp/large    # ModernBERT-Large's shape, 1.6 GB
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_speed import SHAPES, SHARED, random_modernbert  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="large", choices=sorted(SHAPES))
    p.add_argument("--tokenizer", default=os.path.join(SHARED, "tokenizers", "modernbert-standin"))
    p.add_argument("--output_dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    random_modernbert(args.shape, tokenizer, args.seed).save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    print(f"wrote {args.output_dir}: {args.shape} shape, random weights (seed {args.seed})")


if __name__ == "__main__":
    main()
