"""``sned diffnas``: the whole DiffNAS run, stage by stage, resumable.

Stages (each ends by recording itself in ``OUT/state.json``, written atomically; a killed run
continues from the last finished stage):

1. ``supernet`` — block-wise distillation training of the elastic student (from scratch by
   default, ``student_init``) over each stage's fixed candidate pool, a Trainer run in
   ``OUT/work/supernet/`` (:class:`~sned.diffnas.tasks.BlockDistillTask`), then
   ``OUT/work/student.safetensors``.
2. ``search``   — block-wise local search over the same pools on the search held-out set
   (``--search-clips`` × ``--pairs-per-clip`` pairs; ``OUT/search.json``, with the retrain
   recipe and, with ``--compare``, the subnets capped at the uniform shrinks' MACs).
3. ``retrain``  — the chosen subnet, extracted from the student and retrained with the dynamic
   joint loss and the teacher's recipe (:mod:`sned.diffnas.recipe`: as many samples as the
   teacher saw, its lr schedule and EMA), a Trainer run in ``OUT/retrain/``
   (:class:`~sned.diffnas.tasks.JointLossTask`), then ``OUT/model/`` (latent teachers: with
   the autoencoder).
4. ``baseline`` — only with ``--compare``: the references, the teacher's own architecture and,
   per cap, the uniform width shrink and the DiffNAS subnet capped at its MACs
   (``OUT/compare/``), all extracted from the same student and retrained the same way (an arch
   already retrained is not trained twice).
5. ``report``   — ``OUT/report.md`` and ``OUT/scores.json`` (:mod:`sned.diffnas.report`): every
   model on one scoring set disjoint from the search's, its gap to the teacher with intervals,
   its agreement with the teacher's samples, the verdict.

The training stages resume mid-run from their Trainer checkpoints (about every tenth of the
stage), so a killed run loses at most a tenth of a stage.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..arch import Arch, resolve
from ..cost import model_cost
from ..diffusion import diffusion_of
from ..extract import (extract, front_matter, load_pretrained, read_model_meta, save_pretrained,
                       weights_file)
from ..models.unet import VideoUNet
from ..models.codec import FOLDER as AE_FOLDER, codec_for, save_autoencoder
from ..store.files import (DIFFNAS, CheckpointError, check_output, check_state_dict, file_sha256,
                          load_safetensors, read_format_json)
from ..text import TextEncoder
from .blocks import teacher_trace
from .data import heldout_proxy, proxy_batches
from .options import Options
from .recipe import retrain_recipe, teacher_recipe
from .report import write_report
from .search import StageResult, candidate_pools, fit_max_macs, local_search
from .space import StageSpace, shrink_block, with_stage
from .student import init_student, teacher_arch
from .tasks import BlockDistillTask, JointLossTask, run_config, train

FORMAT = "sned-diffnas"
STAGES = ("supernet", "search", "retrain", "baseline", "report")


class Run:
    """One DiffNAS run from ``teacher`` (a model folder) into ``out``."""

    def __init__(self, teacher: str | os.PathLike, out: str | os.PathLike, options: Options,
                 log=print) -> None:
        self.teacher_dir, self.out, self.opts, self.log = Path(teacher), Path(out), options, log
        self.data = options.data_config()
        check_output(self.out, DIFFNAS, [self.teacher_dir, self.data.root, options.i3d],
                     reuse=True)
        self.meta = meta = read_model_meta(self.teacher_dir)
        if self.data.kind == "folder" and not Path(self.data.root).expanduser().is_dir():
            raise ValueError(f"diffnas: --data root={self.data.root}: no such folder")
        self.diffusion = diffusion_of(meta.get("diffusion", {}), self.teacher_dir / "config.json")
        self.teacher = load_pretrained(self.teacher_dir, device=options.device)
        # a latent teacher: the UNet is searched, its autoencoder (frozen) comes along
        self.codec = codec_for(self.teacher_dir, options.device)
        if self.codec is None and (meta.get("model_config") or {}).get("autoencoder"):
            raise CheckpointError(f"{self.teacher_dir} is a latent model without its "
                                  f"autoencoder (no vae/ or autoencoder/ folder recorded)")
        if self.teacher.is_supernet:
            raise CheckpointError(f"{self.teacher_dir} holds a supernet; DiffNAS needs a "
                                  f"static model folder (sned extract)")
        if self.teacher.config.kind != "base":
            raise CheckpointError(f"{self.teacher_dir}: DiffNAS supports base (text → video / "
                                  f"image) models; this is a {self.teacher.config.kind!r} model")
        self.teacher.requires_grad_(False)
        self.cfg = self.teacher.config
        self.arch = teacher_arch(self.teacher)
        self.spaces = [StageSpace(self.cfg, self.teacher.specs, self.arch, st, self.cfg.frames,
                                  options.ratio_list()) for st in self.teacher.stages]
        self.pools = candidate_pools(self.spaces, options.budget, options.seed)
        self.teacher_cost = model_cost(self.cfg, self.arch)
        self.recipe = retrain_recipe(teacher_recipe(self.teacher_dir, meta),
                                     options.retrain_steps, options.retrain_batch,
                                     options.retrain_lr, options.retrain_schedule,
                                     options.ema_decay)
        self.goal_macs = options.goal_macs or (0.5 if self.codec is not None else 0.7)
        self._text = None
        self.caps = self.compare_caps()  # refuses a --compare ratio at the teacher's MACs
        if options.max_macs is not None:  # validate before any training
            floor = self._fixed_macs() + sum(
                sp.cost(tuple(c.make((), {}, c.teacher.kernel) for c in sp.choices)).macs
                for sp in self.spaces)
            if options.max_macs < floor:
                raise ValueError(f"diffnas: --max-macs {options.max_macs:,} is below the "
                                 f"smallest possible subnet ({floor:,} MACs)")
        self.state = self._load_state()

    # ----------------------------------------------------------------------------- state
    def _load_state(self) -> dict:
        """The run's state: a new one, or the one in ``OUT/state.json`` when its settings and
        teacher (path and sha256 of its weights) are this run's — else ValueError naming every
        setting that differs (or the teacher). Written before the first step (:meth:`run`), so a run
        killed at any moment is only continued by the same run."""
        path = self.out / "state.json"
        fresh = {"format": FORMAT, "teacher": str(self.teacher_dir.resolve()),
                 "teacher_sha256": file_sha256(weights_file(self.teacher_dir)),
                 "options": self.opts.to_dict(), "retrain": self.recipe, "done": []}
        if not path.exists():
            left = DIFFNAS.own(self.out) if self.out.is_dir() else []
            if left:
                raise ValueError(f"diffnas: {self.out} holds DiffNAS files ({', '.join(left)}) "
                                 f"but no state.json: a run killed before its settings were "
                                 f"recorded, so it cannot be continued safely; use another "
                                 f"--out")
            return fresh
        state = read_format_json(path, FORMAT, "DiffNAS run state")
        saved = state.get("options") if isinstance(state.get("options"), dict) else {}
        diff = [f"--{k.replace('_', '-')} {now!r} (started with {saved.get(k)!r})"
                for k, now in fresh["options"].items() if saved.get(k) != now]
        if diff:
            raise ValueError(f"diffnas: the run in {self.out} was started with other settings: "
                             f"{', '.join(diff)}; rerun with the same settings to continue "
                             f"it, or use another --out")
        for key in ("teacher", "teacher_sha256"):
            if key in state and state[key] != fresh[key]:
                what = "is another folder than" if key == "teacher" else \
                    "has other weights (sha256) than"
                raise ValueError(f"diffnas: teacher {self.teacher_dir} {what} the teacher the "
                                 f"run in {self.out} was started with ({state[key]}); use the "
                                 f"same teacher or another --out")
        if "retrain" in state and state["retrain"] != json.loads(json.dumps(self.recipe)):
            raise ValueError(f"diffnas: the run in {self.out} retrains with another recipe "
                             f"({state['retrain'].get('teacher_source')}) than the teacher "
                             f"{self.teacher_dir} records now ({self.recipe['teacher_source']}); "
                             f"use another --out")
        return state

    def _save_state(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.out / "state.json", json.dumps(self.state, indent=1) + "\n")

    def _mark(self, stage: str) -> None:
        self.state["done"].append(stage)
        self._save_state()
        self.log(f"diffnas: stage {stage} done")

    def done(self, stage: str) -> bool:
        return stage in self.state["done"]

    # ----------------------------------------------------------------------------- helpers
    @property
    def text(self):
        if self._text is None:

            self._text = TextEncoder(self.data.text_encoder, max_length=self.cfg.text_len,
                                     device=self.opts.device)
        return self._text

    def _fixed_macs(self) -> int:
        return self.teacher_cost.macs - sum(sp.cost(sp.teacher).macs for sp in self.spaces)

    def _supernet_config(self):
        """The block supernet's run: constant ``--lr``, ``--batch-size``, no EMA."""
        o = self.opts
        return run_config(self.cfg, self.diffusion, self.data, steps=o.supernet_steps,
                          batch_size=o.batch_size, lr=o.lr, seed=o.seed, device=o.device,
                          ema_decay=0.0, exact_freeze=True, grad_clip=0.0)

    def _retrain_config(self):
        """Every retrain's run: the teacher's recipe (:attr:`recipe`: steps, batch, lr and its
        schedule, EMA) unless options override it."""
        o, r = self.opts, self.recipe
        return run_config(self.cfg, self.diffusion, self.data, steps=r["steps"],
                          batch_size=r["batch_size"], lr=r["lr"], seed=o.seed + 1,
                          device=o.device, ema_decay=r["ema_decay"], exact_freeze=False,
                          grad_clip=o.grad_clip, lr_schedule=r["lr_schedule"],
                          lr_floor=r["lr_floor"], lr_warmup_steps=r["lr_warmup_steps"])

    def _proxy(self, model: VideoUNet, final: bool = False):
        """The search held-out set, or (``final``) the disjoint one the report scores on: each
        ``--pairs-per-clip`` (timestep, noise) pairs per clip; latent teachers are scored on
        their autoencoder's latents of the clips."""
        o = self.opts
        n, skip, seed = (o.score_heldout, o.search_clips, 1) if final else (o.search_clips, 0, 0)
        return heldout_proxy(model, self.data, self.diffusion, self.arch.resolution, n,
                             self.text, batch=max(o.batch_size, 8), skip=skip, seed=seed,
                             pairs_per_clip=o.pairs_per_clip, codec=self.codec)

    def _distill_task(self, student: VideoUNet | None = None) -> BlockDistillTask:
        o = self.opts
        if student is None:
            torch.manual_seed(o.seed)
            student = init_student(self.teacher, o.student_init)
        return BlockDistillTask(self._supernet_config(), self.teacher, self.arch, student,
                                self.spaces, o.teacher_prob, self.pools, o.draws, o.grad_clip,
                                codec=self.codec)

    def _student(self) -> VideoUNet:
        student = init_student(self.teacher)
        path = self.out / "work" / "student.safetensors"
        state = load_safetensors(path, self.opts.device)
        check_state_dict(student.state_dict(), state, str(path), "this teacher's student")
        student.load_state_dict(state)
        return student

    # ----------------------------------------------------------------------------- stages
    def run(self) -> Path:
        torch.manual_seed(self.opts.seed)
        if not (self.out / "state.json").exists():
            self._save_state()  # settings and teacher recorded before the first step
        if not self.done("supernet"):
            self.log(f"diffnas: block-wise supernet training, {self.opts.supernet_steps} steps")
            student = train(self._distill_task(), self.out / "work" / "supernet",
                            self.log).model
            tmp = self.out / "work" / ".student.tmp"
            save_file({k: v.contiguous().cpu() for k, v in student.state_dict().items()}, tmp)
            os.replace(tmp, self.out / "work" / "student.safetensors")
            self._mark("supernet")
        if not self.done("search"):
            self._search()
            self._mark("search")
        search, arch = self._read_search()
        if not self.done("retrain"):
            self._retrain(arch, self.out / "model", self.out / "retrain", "diffnas")
            self._mark("retrain")
        if not self.done("baseline"):  # only with --compare
            for label, arch in self.comparison(search):
                self._retrain(arch, self.out / "compare" / label,
                              self.out / "compare" / f"{label}-retrain", label)
            self._mark("baseline")
        if not self.done("report"):
            write_report(self, search)
            self._mark("report")
        return self.out

    def _read_search(self) -> tuple[dict, Arch]:
        """``search.json`` and its subnet arch, checked against the teacher's config;
        CheckpointError naming the file when it is garbled."""
        path = self.out / "search.json"
        try:
            search = json.loads(path.read_text())
            arch = Arch.from_dict(search["subnet"]["arch"])
            resolve(self.cfg, arch)
            int(search["subnet"]["macs"])
        except (OSError, ValueError, KeyError, TypeError) as e:  # ArchError is a ValueError
            raise CheckpointError(f"{path}: not a search result for teacher "
                                  f"{self.teacher_dir} ({e})") from None
        return search, arch

    def _search(self) -> None:
        student = self._student()
        self.log(f"diffnas: local search over {[len(p) for p in self.pools]} candidates per "
                 f"block")
        traces = []
        proxy = self._proxy(self.teacher)
        for inputs in proxy_batches(proxy):
            traces.append(teacher_trace(self.teacher, inputs)[1])
        updates = self._distill_task(student).update_counts(self.opts.supernet_steps)
        results = local_search(student, self.spaces, self.arch, traces, self.pools,
                               self.opts.margin, updates)
        free = [copy.copy(x) for x in results]  # before --max-macs: the caps start from it
        if self.opts.max_macs is not None:
            fit_max_macs(results, self._fixed_macs(), self.opts.max_macs)
        arch = self.assemble(results)
        capped = []
        caps = self.caps if self.caps is not None else self.auto_cap(model_cost(self.cfg,
                                                                                arch).macs)
        for r, cap in caps:
            fitted = [copy.copy(x) for x in free]
            fit_max_macs(fitted, self._fixed_macs(), min(cap, self.opts.max_macs or cap))
            capped.append({"ratio": r, "max_macs": cap,
                           "uniform": self._describe(self.uniform_at(r)),
                           "subnet": self._describe(self.assemble(fitted)),
                           "chosen": [x.chosen for x in fitted]})
        counts = [c["updates"] for r in results for c in r.candidates]
        o = self.opts
        doc = {"teacher": {"params": self.teacher_cost.params, "macs": self.teacher_cost.macs,
                           "arch": self.arch.to_dict(), "folder": str(self.teacher_dir),
                           "latent": self.codec is not None},
               "student_init": o.student_init,
               "updates": {"min": min(counts), "max": max(counts),
                           "draws_per_step": o.draws, "steps": o.supernet_steps},
               "heldout": {"search": o.search_clips, "score": o.score_heldout,
                           "pairs_per_clip": o.pairs_per_clip,
                           "search_pairs": o.search_clips * o.pairs_per_clip,
                           "score_pairs": o.score_heldout * o.pairs_per_clip,
                           "search_source": proxy.source, "disjoint": True},
               "margin": o.margin,
               "retrain": self.recipe,
               "blocks": [r.to_dict() for r in results],
               "subnet": self._describe(arch),
               "max_macs": o.max_macs, "compare": o.compare, "capped": capped}
        _write_atomic(self.out / "search.json", json.dumps(doc, indent=1) + "\n")

    def _describe(self, arch: Arch) -> dict:
        cost = model_cost(self.cfg, arch)
        return {"params": cost.params, "macs": cost.macs, "arch": arch.to_dict()}

    def assemble(self, results: list[StageResult]) -> Arch:
        """The teacher's arch with every stage's chosen candidate."""
        arch = self.arch
        for space, r in zip(self.spaces, results):
            arch = with_stage(arch, space.stage, r.choices[r.chosen])
        return arch

    def uniform_at(self, r: float) -> Arch:
        """The teacher with every layer narrowed to ratio ``r`` of the supernet's width where
        that is narrower (components and kernels unchanged; :func:`~.space.shrink_block`)."""
        blocks = tuple(shrink_block(self.cfg, spec, b, r)
                       for spec, b in zip(self.teacher.specs, self.arch.blocks))
        return Arch(self.arch.resolution, blocks, self.arch.config)

    def _uniform_ladder(self) -> list[tuple[float, int]]:
        """(r, MACs) of the uniform shrinks over the config's ratios that are cheaper than the
        teacher, most expensive first."""
        rows = {model_cost(self.cfg, self.uniform_at(r)).macs: r for r in sorted(self.cfg.ratios)}
        return sorted(((r, m) for m, r in rows.items() if m < self.teacher_cost.macs),
                      key=lambda x: -x[1])

    def compare_caps(self) -> list[tuple[float, int]] | None:
        """(r, MACs of the uniform shrink at r) per ``--compare`` ratio ([] = no comparison;
        None = ``auto``, decided after the search). ValueError naming r when the shrink at r is
        not cheaper than the teacher (a teacher no wider than r: the comparison would be the
        teacher against itself), or when no ratio of the config is."""
        ratios = self.opts.compare_list()
        if ratios is None:
            if not self._uniform_ladder():
                raise ValueError(f"diffnas: --compare auto: no uniform width shrink of the "
                                 f"config's ratios {list(self.cfg.ratios)} is cheaper than the "
                                 f"teacher {self.teacher_dir}")
            return None
        caps = []
        for r in ratios:
            macs = model_cost(self.cfg, self.uniform_at(r)).macs
            if macs >= self.teacher_cost.macs:
                raise ValueError(f"diffnas: --compare {r:g}: the uniform width shrink at r = "
                                 f"{r:g} keeps {macs / self.teacher_cost.macs:.1%} of the "
                                 f"teacher's MACs (the teacher {self.teacher_dir} is no wider "
                                 f"than that), so it is not a smaller baseline; use smaller "
                                 f"ratios or --compare auto")
            caps.append((r, macs))
        return caps

    def auto_cap(self, macs: int) -> list[tuple[float, int]]:
        """``--compare auto``: the cheapest uniform shrink that is not cheaper than ``macs``
        (the subnet is compared as chosen), else the most expensive one below the teacher."""
        ladder = self._uniform_ladder()
        above = [x for x in ladder if x[1] >= macs]
        return [above[-1] if above else ladder[0]]

    def comparison(self, search: dict) -> list[tuple[str, Arch]]:
        """The references' models to retrain, ``(label, arch)``: the teacher's architecture,
        then per cap the uniform shrink at r and the DiffNAS subnet capped at its MACs (empty
        without ``--compare``)."""
        out = [("teacher-arch", self.arch)] if search.get("capped") else []
        for c in search.get("capped", []):
            out.append((f"uniform-r{c['ratio']:g}", Arch.from_dict(c["uniform"]["arch"])))
            out.append((f"diffnas-r{c['ratio']:g}", Arch.from_dict(c["subnet"]["arch"])))
        return out

    def retrained(self, arch: Arch) -> Path | None:
        """A model folder of this run already holding ``arch`` retrained (every retrain uses
        the same student, data order and steps, so the same arch gives the same model)."""
        want = arch.to_dict()
        for folder in [self.out / "model",
                       *sorted(f for f in (self.out / "compare").glob("*")
                               if not f.name.endswith("-retrain"))]:
            meta = folder / "arch.json"
            if (folder / "config.json").is_file() and meta.is_file() and \
                    Arch.from_dict(json.loads(meta.read_text())).to_dict() == want:
                return folder
        return None

    def _retrain(self, arch: Arch, folder: Path, run_dir: Path, label: str) -> None:
        """Extract ``arch`` from the trained student, retrain it with the joint loss and the
        teacher's recipe (a Trainer run in ``run_dir``) and save it (EMA weights when EMA is on)
        to ``folder`` — with the teacher's autoencoder for a latent teacher, so ``sned sample``
        decodes it. An arch retrained before is not trained again: ``folder/same-as.json``
        names it."""
        same = self.retrained(arch)
        if same is not None and same != folder:
            rel = str(same.relative_to(self.out))
            _write_atomic(folder / "same-as.json", json.dumps({"folder": rel}) + "\n")
            self.log(f"diffnas: {label} is the arch of {rel}/, not retrained twice")
            return
        if same == folder:
            return
        r = self.recipe
        self.log(f"diffnas: retraining the {label} subnet, {r['steps']} steps × batch "
                 f"{r['batch_size']} ({r['lr_schedule']} lr {r['lr']:g}, EMA {r['ema_decay']})")
        model = extract(self._student(), arch).train().requires_grad_(True)
        trainer = train(JointLossTask(self._retrain_config(), self.teacher, self.arch, model,
                                      self.opts.beta_schedule, codec=self.codec),
                        run_dir, self.log)
        if trainer.ema is not None:
            trainer.ema.copy_to(model.parameters())
        model.eval()
        cost = model_cost(self.cfg, arch)
        card = {"config": self.cfg.name, "kind": self.cfg.kind, "subnet": label,
                "resolution": arch.resolution, "frames": self.cfg.frames,
                "params": cost.params, "macs": cost.macs,
                "teacher": str(self.teacher_dir), "teacher_params": self.teacher_cost.params,
                "teacher_macs": self.teacher_cost.macs, "retrain": {
                    k: r[k] for k in ("steps", "batch_size", "lr", "lr_schedule", "lr_floor",
                                      "ema_decay", "samples")},
                "weights": "ema" if trainer.ema is not None else "raw",
                "conditional": self.cfg.conditional, "tags": ["diffnas"],
                "base_model": (self.meta.get("card") or {}).get("base_model")
                or str(self.teacher_dir)}
        text = front_matter(card) + (
            f"# sned DiffNAS subnet ({label})\n\nFrom teacher `{self.teacher_dir}`: "
            f"{cost.params:,} params ({cost.params / self.teacher_cost.params:.1%}), "
            f"{cost.macs:,} MACs ({cost.macs / self.teacher_cost.macs:.1%}).\n")
        extra = {"diffusion": self.diffusion.to_dict(), "card": card}
        if self.meta.get("data") is not None:
            extra["data"] = self.meta["data"]
        write_more = None
        if self.codec is not None:  # the teacher's autoencoder and latent stats come along
            extra["latent"] = {"autoencoder": AE_FOLDER, **self.codec.stats.to_dict()}

            def write_more(tmp: Path) -> None:
                save_autoencoder(self.codec.ae, tmp / AE_FOLDER, self.codec.stats)
        save_pretrained(model, folder, extra=extra, write_more=write_more,
                        files={"README.md": text, "arch.json": arch.to_json(indent=1)})


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_diffnas(teacher: str | os.PathLike, out: str | os.PathLike, options: Options | None =
                None, log=print) -> Path:
    """Run (or continue) DiffNAS; returns ``out``."""
    return Run(teacher, out, options or Options(), log).run()
