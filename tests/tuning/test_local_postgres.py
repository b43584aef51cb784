"""`local_postgres`: a throw-away server a study can use, gone after the block; a clear error without PostgreSQL."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from cleanai.tuning import TuneConfig, TuningError, local_postgres, tune


def test_a_study_runs_on_the_local_server_and_the_server_is_gone_after_the_block(postgres_installed) -> None:
    with local_postgres() as url:
        result = tune(lambda t: t.params["x"], {"x": [1, 2]},
                      TuneConfig(sampler="grid", storage=url, study_name="try", n_trials=2, progress=False))
        assert len(result.completed()) == 2 and url.startswith("postgresql://tuner:")
        port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there any more


def test_without_postgresql_the_error_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(TuningError, match=r"PostgreSQL is not installed: no initdb in .*apt-get install postgresql"):
        with local_postgres(bindir=tmp_path):
            pass
