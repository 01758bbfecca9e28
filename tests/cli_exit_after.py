"""`python tests/cli_exit_after.py K stream ...` runs `pyscall` in this process and ends it (status 3, no
clean-up) right after the checkpoint of segment K is saved, as a kill would: the kill-and-resume tests."""
import os
import sys

from pyscall.app import checkpoint, cli


def main() -> None:
    segment, argv = int(sys.argv[1]), sys.argv[2:]
    save = checkpoint.save

    def save_then_die(state, path):
        save(state, path)
        if state["next_segment"] == segment + 1:
            sys.stdout.flush()
            os._exit(3)

    checkpoint.save = save_then_die  # the CLI calls checkpoint.save through the module
    sys.exit(cli.main(argv))


if __name__ == "__main__":
    main()
