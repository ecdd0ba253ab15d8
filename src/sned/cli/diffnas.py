"""``sned diffnas``: shrink a trained model folder with DiffNAS (block-wise distillation NAS)."""

from __future__ import annotations

import argparse
import json

from ..config_parsing import parse_override
from ..diffnas.pipeline import Options, run_diffnas
from . import args as check


def diffnas_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("teacher", help="trained static model folder (sned extract output, or a "
                                   "diffusers UNet2DModel brought in with sned import)")
    p.add_argument("--out", required=True,
                   help="output folder (state.json, search.json, model/, retrain/, report.md); "
                        "rerunning with the same settings and teacher continues a killed run, "
                        "any other settings are refused")
    p.add_argument("--supernet-steps", type=int, default=200,
                   help="block-wise distillation steps (default 200)")
    p.add_argument("--retrain-steps", type=int, default=None,
                   help="retraining steps of every retrained model (default: as many samples "
                        "as the teacher saw — its recorded steps × batch / the retrain batch)")
    p.add_argument("--retrain-batch", type=int, default=None,
                   help="retraining batch (default: the teacher's)")
    p.add_argument("--retrain-lr", type=float, default=None,
                   help="retraining peak lr (default: the teacher's)")
    p.add_argument("--retrain-schedule", default=None,
                   help="retraining lr schedule, constant or cosine (default: the teacher's, "
                        "cosine to its floor)")
    p.add_argument("--budget", type=int, default=64,
                   help="candidate pool per block: trained in the supernet, scored by the "
                        "search (the whole block space when it is smaller)")
    p.add_argument("--max-macs", type=float, help="MACs cap of the subnet (e.g. 2.5e9)")
    p.add_argument("--batch-size", type=int, default=4, help="block supernet batch")
    p.add_argument("--search-clips", "--heldout", dest="search_clips", type=int, default=128,
                   help="held-out clips the search scores (default 128)")
    p.add_argument("--pairs-per-clip", type=int, default=4,
                   help="(timestep, noise) pairs per held-out clip, search and scoring "
                        "(default 4)")
    p.add_argument("--score-heldout", type=int, default=64,
                   help="further held-out clips, disjoint from the search's: the one shared "
                        "scoring set of report.md")
    p.add_argument("--lr", type=float, default=1e-3,
                   help="lr of the block supernet (default 1e-3: students start from scratch)")
    p.add_argument("--student-init", default="scratch",
                   help="scratch (stage weights freshly initialised; default) or teacher "
                        "(a copy of the teacher)")
    p.add_argument("--draws", type=int, default=4,
                   help="pool candidates trained per block and supernet step")
    p.add_argument("--grad-clip", type=float, default=1.0,
                   help="max grad norm, per block in the supernet, global in retraining")
    p.add_argument("--ratios", default="1,0.75,0.5",
                   help="width ratios of the block spaces, or 'full' (the config's ladder)")
    p.add_argument("--margin", type=float, default=0.0,
                   help="accept a candidate whose loss is at most the teacher-shaped one's "
                        "plus this many paired standard errors (0 = the paper's rule)")
    p.add_argument("--compare", nargs="?", const="auto", default="",
                   help="also retrain the references: the teacher's arch and the uniform width "
                        "shrink (bare --compare: the one nearest above the subnet's MACs; or "
                        "ratios r, e.g. 0.75,0.5, each capping DiffNAS at the shrink's MACs); "
                        "off by default")
    p.add_argument("--tolerance", type=float, default=0.01,
                   help="verdict: the largest val-loss gap to the teacher that counts as "
                        "equal (default 0.01 = 1 %%)")
    p.add_argument("--goal-macs", type=float, default=None,
                   help="verdict: the MACs fraction cap (default 0.7 pixel, 0.5 latent)")
    p.add_argument("--agreement-samples", type=int, default=8,
                   help="DDIM samples per model compared with the teacher's (PSNR/SSIM; 0 = off)")
    p.add_argument("--agreement-steps", type=int, default=20, help="their DDIM steps")
    p.add_argument("--beta-schedule", default="linear", help="linear or cosine")
    p.add_argument("--teacher-prob", type=float, default=0.0,
                   help="probability per supernet step and block of also training the "
                        "teacher-shaped candidate (1 = sandwich, 0 = pool draws only)")
    p.add_argument("--ema-decay", type=float, default=None,
                   help="EMA decay of retraining (default: the teacher's); the model folders "
                        "hold the EMA weights (0 = off, raw weights)")
    p.add_argument("--fvd-videos", type=int, default=16,
                   help="video teachers: clips per model for FVD/KVD in report.md (0 = skip)")
    p.add_argument("--i3d", default=None,
                   help="FVD detector: I3D weights path, or 'random' (relative comparisons "
                        "only); default the installed Kinetics-400 weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE",
                   help="data settings, e.g. kind=folder root=/videos (default synthetic)")


def run_diffnas_cmd(args: argparse.Namespace) -> int:
    import torch


    device = (("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto"
              else args.device)
    check.above("--max-macs", args.max_macs, 0)  # inf / nan named here, not an OverflowError
    data = dict(parse_override(item) for item in args.data)
    max_macs = None if args.max_macs is None else int(args.max_macs)
    opts = Options(args.supernet_steps, args.retrain_steps, args.budget, max_macs,
                   args.batch_size, args.search_clips, args.lr, args.beta_schedule, args.seed,
                   device, data, args.teacher_prob, args.ema_decay, args.fvd_videos,
                   args.i3d, student_init=args.student_init, draws=args.draws,
                   grad_clip=args.grad_clip, ratios=args.ratios, margin=args.margin,
                   score_heldout=args.score_heldout, compare=args.compare,
                   pairs_per_clip=args.pairs_per_clip, retrain_batch=args.retrain_batch,
                   retrain_lr=args.retrain_lr, retrain_schedule=args.retrain_schedule,
                   tolerance=args.tolerance, goal_macs=args.goal_macs,
                   agreement_samples=args.agreement_samples,
                   agreement_steps=args.agreement_steps)
    out = run_diffnas(args.teacher, args.out, opts,
                      log=lambda m: print(m, file=__import__("sys").stderr))
    search = json.loads((out / "search.json").read_text())
    verdict = json.loads((out / "scores.json").read_text())["verdict"]
    print(json.dumps({"out": str(out), "teacher": {k: search["teacher"][k] for k in
                                                   ("params", "macs")},
                      "subnet": {k: search["subnet"][k] for k in ("params", "macs")},
                      "retrain": {k: search["retrain"][k] for k in
                                  ("steps", "batch_size", "samples", "teacher_source")},
                      "verdict": {k: verdict[k] for k in ("status", "reason")}}))
    return 0
