"""Extract a model's layer activations over a Broden dataset into a run (Zarr cache).

Example (`python scripts/extract.py` takes the same arguments):
    netdissect extract --dataset data/broden1_224 --model demo \\
        --layers conv3,conv5 --out runs/demo

Rerunning the same command resumes an interrupted extraction, or does nothing when
the cache is complete; adding --repair first re-checks every stored chunk's CRC32C
and re-extracts only the blocks holding damaged ones. See pipeline/extract.py and
cache/store.py for the details.
"""
from __future__ import annotations

import argparse
import sys

from cache.store import RunError
from pipeline import cli, commandline
from pipeline.broden import BrodenError
from pipeline.devices import DeviceError
from pipeline.extract import extract_with_stats
from pipeline.extract_config import ExtractConfig, ExtractError
from pipeline.models.errors import LayerError, ModelError
from pipeline.preprocess import IMAGENET_MEAN, IMAGENET_STD


def _floats3(name: str):
    def parse(text: str) -> tuple[float, float, float]:
        try:
            vals = tuple(float(v) for v in text.replace(" ", "").split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: expected three numbers like "
                                             f"0.485,0.456,0.406, got {text!r}") from None
        if len(vals) != 3:
            raise argparse.ArgumentTypeError(f"{name}: expected three numbers, got {text!r}")
        return vals
    return parse


def _size(text: str) -> tuple[int, int]:
    try:
        vals = [int(v) for v in text.lower().replace("x", ",").split(",")]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"--input-size: expected S or H,W (pixels), "
                                         f"got {text!r}")
    return vals[0], vals[1]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="Broden directory (holds index.csv)")
    p.add_argument("--model", required=True,
                   help="demo | path/file.py:function | package.module:function | "
                        "torchvision:NAME[:k=v,..] | timm:NAME[:k=v,..] (random init seeded by "
                        "seed=N, default 0) | TorchScript or pickled model file (with "
                        "--trust-checkpoint)")
    cli.add_layers(p, required=True,
                   help="comma-separated layer names (e.g. conv3,conv5 or layer4)")
    p.add_argument("--out", required=True, help="run directory to create or resume")
    p.add_argument("--weights", help="checkpoint: a state_dict, a dict with one entry "
                                     "holding it ({'state_dict': ...}, {'model': ...}) or "
                                     ".safetensors; a prefix module./model./backbone./"
                                     "module.encoder_q./encoder. is stripped when the rest "
                                     "fits the model exactly; read with torch's safe loader")
    p.add_argument("--weights-key", default=None,
                   help="the checkpoint entry holding the weights when it holds several, "
                        "e.g. teacher, student, state_dict_ema, model_ema (a.b descends)")
    p.add_argument("--weights-prefix", default=None,
                   help="strip this prefix from the checkpoint's keys (e.g. backbone.); "
                        "keys without it are dropped")
    p.add_argument("--layout", action="append", default=None, metavar="[LAYER=]LAYOUT",
                   help="how a layer's output holds maps, for layers the model does not "
                        "imply: channels_first (B,K,h,w) | channels_last (B,h,w,K) | "
                        "tokens[:prefix=P,grid=HxW] (B,P+h*w,K; prefix tokens dropped); "
                        "LAYER=LAYOUT for one layer; repeatable")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a --weights file the safe loader refuses with the full "
                        "unpickler, which runs any code the file names, and allow a "
                        "TorchScript or whole pickled model as --model (programs): only "
                        "for files you trust; prints a warning")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images per forward pass and per resume block (default 32)")
    p.add_argument("--workers", type=int, default=None,
                   help="image decoding processes (default min(4, cores-1); 0 = main)")
    cli.add_device(p, help="where the network runs: auto (cuda when available), cpu, cuda "
                           "or cuda:N (default auto)")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                   help="stored activation dtype (default float16)")
    p.add_argument("--input-size", type=_size, default=None,
                   help="S or H,W: resize images (PIL bilinear) to this size (default: "
                        "the model's (timm pretrained_cfg), else the dataset's image size, "
                        "no resizing)")
    p.add_argument("--mean", type=_floats3("--mean"), default=None,
                   help="per-channel mean on the 0..1 scale, RGB order (default: the "
                        "model's (timm pretrained_cfg), else ImageNet "
                        f"{','.join(map(str, IMAGENET_MEAN))})")
    p.add_argument("--std", type=_floats3("--std"), default=None,
                   help="per-channel std on the 0..1 scale (default: the model's, else "
                        f"ImageNet {','.join(map(str, IMAGENET_STD))}); "
                        "--mean 0,0,0 --std 1,1,1 feeds pixels/255")
    p.add_argument("--bgr", action="store_true", help="feed channels in BGR order (Caffe)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a cache made with another model/dataset/settings (layers "
                        "a complete run lacks are added without it); a run holding more "
                        "than its cache (results/, scored thresholds and cubes, derived "
                        "runs) is listed and kept unless --yes is given too")
    p.add_argument("--yes", action="store_true",
                   help="with --overwrite: delete what was computed from the old cache too")
    p.add_argument("--compression", default="lz4", choices=["lz4", "zstd", "none"],
                   help="chunk codec: lz4 (Blosc, fast, default), zstd (~20%% smaller, "
                        "~4x slower to write) or none")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default on CPU: the cores not busy when the "
                        "extraction starts, at least 1)")
    p.add_argument("--repair", action="store_true",
                   help="check every stored chunk (CRC32C) and re-extract only the blocks "
                        "holding damaged or missing chunks; names each damaged chunk")
    cli.add_quiet(p)


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.yes and not a.overwrite:
        p.error("--yes only confirms --overwrite (deleting what was computed from the old "
                "cache); add --overwrite, or drop --yes")


def run(a: argparse.Namespace) -> int:
    config = ExtractConfig(
        dataset=a.dataset, model=a.model, layers=a.layers, out=a.out, weights=a.weights,
        batch_size=a.batch_size, workers=a.workers, device=a.device, dtype=a.dtype,
        input_size=a.input_size, mean=a.mean, std=a.std, bgr=a.bgr, limit=a.limit,
        overwrite=a.overwrite, yes=a.yes, compression=a.compression, threads=a.threads,
        progress=not a.quiet, repair=a.repair, trust_checkpoint=a.trust_checkpoint,
        layouts=a.layout, weights_key=a.weights_key, weights_prefix=a.weights_prefix)

    def body() -> None:
        st = extract_with_stats(config)
        if st.status != "complete":
            print(f"{st.status} {st.images} images ({st.num_images} in the run) in "
                  f"{st.seconds:.1f} s: {st.images_per_s:.1f} images/s")
        print(f"run: {st.path.resolve()}  layers: {', '.join(config.layers)}  "
              f"on disk: {st.bytes_on_disk / 2**20:.1f} MiB")

    return cli.run_main(
        body, (ExtractError, RunError, ModelError, LayerError, BrodenError, DeviceError),
        disk_note="blocks written before are kept: fix the cause (e.g. free disk space) "
                  "and rerun the same command to resume",
        interrupt_note="rerun the same command to resume",
        read_only_note=f"--out {a.out} is read-only: choose a writable --out (or copy the "
                       f"run to one) and rerun")


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
