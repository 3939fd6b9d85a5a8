"""Save a ModernBERT with seeded random weights and ModernBERT-Large-Instruct's tokenizer as a model folder, for
timing the scripts themselves (train.py, the sweep) where no real checkpoint can be fetched.

    python bench/random_model.py --shape large --output_dir /tmp/large    # ModernBERT-Large's shape, 1.6 GB
    python bench/random_model.py --tokenizer ~/modernbert-tokenizer --output_dir /tmp/large   # a local tokenizer

The tokenizer comes from the hub, or from a local folder given by --tokenizer.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_speed import SHAPES, random_modernbert  # noqa: E402  (it puts the repository on the path)
from sources import TOKENIZER, TOKENIZER_HELP, load_tokenizer  # noqa: E402

import mlm_classifier as core  # noqa: E402


def main():
    p = core.make_parser(__doc__)
    p.add_argument("--shape", default="large", choices=sorted(SHAPES))
    p.add_argument("--tokenizer", default=TOKENIZER, help=TOKENIZER_HELP)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    tokenizer = load_tokenizer(args.tokenizer)
    random_modernbert(args.shape, tokenizer, args.seed).save_pretrained(args.output_dir)
    tokenizer.save_pretrained(args.output_dir)
    print(f"wrote {args.output_dir}: {args.shape} shape, random weights (seed {args.seed})")


if __name__ == "__main__":
    core.run_command(main)
