"""`python -m lm_eval_egmla ARGS` = `lm_eval ARGS` with model type egmla
registered (lm-eval's command line does not import plugins by itself)."""
import sys

import lm_eval_egmla  # noqa: F401  (registers "egmla")


def main():
    from lm_eval.__main__ import cli_evaluate
    cli_evaluate()


if __name__ == "__main__":
    sys.exit(main())
