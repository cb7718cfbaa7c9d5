"""CLI refusal checks shared by the test modules (not collected: leading underscore)."""

from __future__ import annotations

from rpnkit.cli import main


def one_line(err: str) -> bool:
    """A refusal as users must see it: one ``rpnkit: error:`` line, no traceback."""
    lines = err.strip().splitlines()
    return (len(lines) == 1 and lines[0].startswith("rpnkit: error:")
            and "internal error" not in err and "Traceback" not in err)


def refused(capsys, argv, *fragments) -> str:
    """Run ``rpnkit argv``: exit 2 with one line containing every fragment; returns stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert one_line(err), err
    for f in fragments:
        assert f in err, err
    return err
