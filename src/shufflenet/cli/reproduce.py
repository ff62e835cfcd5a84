"""``shufflenet reproduce``: the paper's tables (1: complexity, 2-5: training grids on CIFAR-10, 8: latency)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..experiments import TABLES, reproduce
from .common import add_md5_argument, bounded, positive_int


def cmd_reproduce(args: argparse.Namespace) -> None:
    print(reproduce(args.table, data=args.data, data_dir=args.data_dir, epochs=args.epochs, seeds=args.seeds,
                    results=Path(args.output), runs=Path(args.runs), docs=Path(args.docs), threads=args.threads,
                    check_md5=args.check_md5, extended=args.extended, list_only=args.list,
                    report_only=args.report_only, command=args.command_line, max_steps=args.max_steps_per_epoch,
                    int8_weights=args.int8_weights, workers=args.workers, gpus_per_cell=args.gpus_per_cell,
                    address=args.address, compile_cells=args.compile, time_limit=args.time_limit,
                    only=args.cells))


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("reproduce", help="the paper's tables: complexity, training grids, latency",
                                 description="Reproduce the ShuffleNet paper's tables. Training tables (2-5) run "
                                             "a grid of cells on CIFAR-10; a finished cell is skipped and an "
                                             "unfinished one resumes, so a stopped grid goes on where it stopped.")
    parser.add_argument("table", choices=(*TABLES, "all"),
                        help="table1 (complexity), table2-table5 (training), table8 (latency), or all "
                             "(table1 and the training tables)")
    parser.add_argument("--data", default="cifar10", choices=("cifar10", "cifar100"), help="data set (default cifar10)")
    parser.add_argument("--data-dir", help="folder holding cifar-10-batches-py")
    add_md5_argument(parser)
    parser.add_argument("--epochs", type=positive_int, default=2,
                        help="epochs of every cell (default 2: the default grid then takes about 160 minutes here)")
    parser.add_argument("--seeds", type=positive_int, default=2, help="seeds per model (default 2)")
    parser.add_argument("--extended", action="store_true", help="also the 140 MFLOPs rung (1x, Table 4 at 140, "
                                                                 "MobileNet 0.5 against ShuffleNet 1x)")
    cells = parser.add_argument_group("how the cells run", "Cells are Ray tasks: without options a local Ray "
                                      "instance sized to this machine (no dashboard, nothing left running after it)")
    cells.add_argument("--workers", type=bounded(int, 0), help="cells at once (default: as many as the CPUs, or "
                                                               "GPUs, hold at --threads-per-cell each); 0: one at a "
                                                               "time in this process, without Ray")
    cells.add_argument("--threads-per-cell", "--threads", dest="threads", type=positive_int,
                       help="CPU threads of each cell, the CPUs its Ray task asks for (default 1, or the cores "
                            "shared by --workers; with --workers 0: all cores)")
    cells.add_argument("--gpus-per-cell", type=bounded(float, 0, 1),
                       help="GPU share of each cell: 0.25 packs four cells on one GPU; each cell with a GPU trains "
                            "with CUDA, AMP (bf16) and channels_last (default: 1 where there are GPUs, else 0)")
    cells.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                       help="torch.compile each cell's model (default off: every cell pays the compile warm-up, "
                            "and on this project's CPU it did not speed up the step; docs/reproduction.md)")
    cells.add_argument("--time-limit", type=bounded(float, 1), metavar="MINUTES",
                       help="start only the cells estimated to end within MINUTES (from what the finished cells "
                            "took), so the grid stops by itself with none half-trained; run again to go on")
    cells.add_argument("--address", help="join this Ray cluster (e.g. HEAD:6379, or auto) instead of starting one; "
                                         "--runs, --output and --data-dir must then be on storage every node sees "
                                         "at the same path (checked at the start)")
    parser.add_argument("--output", default="results/reproduce", help="cell results (default results/reproduce)")
    parser.add_argument("--runs", default="runs/reproduce", help="run folders of the cells (default runs/reproduce)")
    parser.add_argument("--docs", default="docs", help="where reproduction.md and the plots go (default docs)")
    parser.add_argument("--max-steps-per-epoch", type=positive_int, help="cut every epoch (smoke tests of the grid)")
    parser.add_argument("--int8-weights", help="table8: trained weights for the int8 accuracy change, scored on "
                                               "--data-dir (its train split calibrates, its test split scores)")
    parser.add_argument("--list", action="store_true", help="list the cells, their state (done, running, failed, "
                                                            "partial, pending) and the time left; also while a grid "
                                                            "runs, from another terminal")
    parser.add_argument("--report-only", action="store_true", help="regenerate the report from the cell results")
    parser.add_argument("--cells", metavar="PATTERN", help="only the cells whose name matches this shell pattern "
                                                           "(e.g. '*x0_25*', 'table4_*-s1'; quote it), for --list "
                                                           "and training; the report still covers the whole tables")
    parser.set_defaults(func=cmd_reproduce)
