"""`jigd demo`: a whole station on the simulator, from nothing, with the books checked at the end.

Three processes, as on a real bench: the simulator (`jigsim serve`: rigs, hubs, an operator
feeding a pallet), the daemon (`jigd run`) and this orchestrator, which talks to the daemon only
through its control API, as `jigctl` does. Everything goes under the work directory:

    jigd.toml            the config the daemon ran with
    keys/                manufacturer signing keys, public keys, master-keys.toml (0600)
    catalog/             freshly signed images, as `jigd catalog add` writes them
    pallet.json, pallet.manifest.csv
    state/jigd.sqlite3   the daemon's store
    reports/             summary.json, results.csv, smi-update.csv, fault-analysis.csv
    ground-truth.json    every simulated hub's real final state
    jigd.log, jigsim.log

With `--hub-exe PATH` the simulator's hubs are Zephyr native_sim processes (`jigsim serve
--hub-exe`): serial slots with console framing, no injected faults, images of 64 KiB by default
(they must fit the executable's 0x69000-byte slots beside MCUboot's trailer).

With `--load-early N` the simulator starts before the import, and the batch is imported once N
of its hubs were rejected (`not_in_batch`); the demo then reads the batch's set-aside hubs through
the control API and tells the simulated operator to re-insert them (`sim.reinsert`), as a
technician does after `jigctl batch show`.

The books balance when every manifest GUID has exactly one outcome, every `reflashed` or
`already_current` hub really runs that version confirmed and locked, `smi-update.csv` is exactly
the `reflashed` set, `fault-analysis.csv` exactly the `failed` set (a failed hub it says is
`locked=yes` really is), GUIDs missing from the pallet are `not_received`, and every unlisted hub
was rejected and left untouched.

With `--stations N` (N > 1) the demo is a site: N simulators and N daemons on one PostgreSQL
store (`--store URL`, or a throwaway cluster of its own, `pgcluster`) and one batch, the pallet
split over the N benches, the books checked against every bench's ground truth (`site`).

Modules: `workdir` (options, paths, keys, catalog, pallet, the daemon's config), `process` (the
child processes, asyncio), `run` (a run from start to books), `site` (a run of N stations),
`books` (the check at the end), `pgcluster` (a throwaway PostgreSQL cluster).
The live view and the report writing are `jigctl`'s (jigd.liveview, `ControlClient.save_report`).
"""

from jigd.demo.books import check_books
from jigd.demo.process import Process, daemon_process, sim_process, wait_for_paths
from jigd.demo.run import DemoRun, run_demo, stop_on_signal
from jigd.demo.site import SiteRun, StationRun, run_site
from jigd.demo.workdir import DemoOptions, Paths, demo_config, demo_options_from, prepare

__all__ = [
    "DemoOptions",
    "DemoRun",
    "Paths",
    "Process",
    "SiteRun",
    "StationRun",
    "check_books",
    "daemon_process",
    "demo_config",
    "demo_options_from",
    "prepare",
    "run_demo",
    "run_site",
    "sim_process",
    "stop_on_signal",
    "wait_for_paths",
]
