"""The Flower apps: a ServerApp that drives the experiment, a ClientApp that emulates devices.

The same two apps run under Flower's simulation engine on Ray (``testbed run``)
and as a Flower App (``flwr run .``), so the code that emulates a fleet is the
code that would run on real devices. Both are thin: the message schema is
:mod:`testbed.messages`, the device side :mod:`testbed.device`, the server side
:class:`testbed.orchestrator.Experiment`.
"""

from __future__ import annotations

import traceback
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from testbed.device import run_cohort
from testbed.messages import read_job, reply_content

client_app = ClientApp()


@client_app.query("round")
def round_query(message: Message, context: Context) -> Message:
    return Message(reply_content(run_cohort(read_job(message.content))), reply_to=message)


def make_server_app(experiment) -> ServerApp:
    """A ServerApp driving an :class:`testbed.orchestrator.Experiment` prepared in this process."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        experiment.drive(grid)

    return app


def _app_path(text: str) -> Path:
    """A config path from the run config: as given, else under the app (project) folder."""
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return Path(__file__).resolve().parents[1] / path


# ``flwr run .``: the run config names the experiment config and the run folder
# ([tool.flwr.app.config] in pyproject.toml, overridable with --run-config).
server_app = ServerApp()


@server_app.main()
def _flwr_main(grid: Grid, context: Context) -> None:
    from testbed.config import load_config
    from testbed.orchestrator import Experiment

    run_config = context.run_config
    config_path = _app_path(str(run_config.get("config", "configs/tiny.yaml")))
    overrides = [s for s in str(run_config.get("set", "")).split(";") if s.strip()]
    config = load_config(config_path, overrides)
    out = Path(str(run_config.get("out", "runs/flwr"))).expanduser()
    experiment = Experiment(
        config, out, resume=bool(run_config.get("resume", False)), progress=False, config_path=config_path
    )
    try:
        experiment.prepare()
        experiment.drive(grid)
    except Exception:
        experiment.log(traceback.format_exc())
        raise
    finally:
        experiment.finish()
