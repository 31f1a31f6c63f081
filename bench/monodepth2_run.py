"""Run Monodepth2's own `Trainer` for one epoch and time its steady-state optimiser steps.

    python bench/monodepth2_run.py CHECKOUT TIMING_JSON SKIP -- <Monodepth2's own train.py options>

Used by `bench/transfer_vs_monodepth2.py`; not part of GeoPt. CHECKOUT is a Monodepth2 checkout (its code
is never copied here). The clock reads after optimiser step SKIP and after the last one (CUDA synchronised
at both), so start-up, the step-0 log and validation, and the end-of-epoch save stay outside it.

Monodepth2 (2019) predates the torch, torchvision, Pillow and numpy this project runs on. So that its trainer
runs unchanged, this process (and its loader workers) gets, only where the installed version lacks it:
`Image.ANTIALIAS` (now LANCZOS), `np.int`, ResNet constructors taking `pretrained` positionally,
`ColorJitter.get_params` returning a transform (it now returns parameters; the transform applies them in
the drawn order, as the old one did), `.next()` on DataLoader iterators, and stand-ins for modules it
imports but training does not need or that the project's environment lacks (`IPython`; `tensorboardX` as
`torch.utils.tensorboard`; `six.moves.urllib` as `urllib`; `skimage.transform.resize` at order 0 as OpenCV's nearest-neighbour resize,
for the velodyne depth it loads as ground truth). None changes what a training step computes.
"""
import json
import sys
import time
import types


def _adapt_to_current_libraries() -> None:
    import numpy as np
    import PIL.Image
    import torch
    import torch.utils.tensorboard
    import torchvision
    from torchvision import transforms
    from torchvision.transforms import functional as F

    if not hasattr(PIL.Image, "ANTIALIAS"):
        PIL.Image.ANTIALIAS = PIL.Image.LANCZOS
    if "int" not in np.__dict__:
        np.int = int

    for depth in (18, 34, 50, 101, 152):
        name = f"resnet{depth}"
        build = getattr(torchvision.models, name)

        def resnet(pretrained=False, _build=build, **kwargs):
            return _build(weights="IMAGENET1K_V1" if pretrained else None, **kwargs)
        setattr(torchvision.models, name, resnet)

    draw = transforms.ColorJitter.get_params
    if isinstance(draw((0.8, 1.2), (0.8, 1.2), (0.8, 1.2), (-0.1, 0.1)), tuple):
        adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue)

        def get_params(brightness, contrast, saturation, hue):
            order, *factors = draw(brightness, contrast, saturation, hue)

            def jitter(image):
                for i in order:
                    if factors[i] is not None:
                        image = adjust[i](image, factors[i])
                return image
            return jitter
        transforms.ColorJitter.get_params = staticmethod(get_params)

    from torch.utils.data import dataloader
    if not hasattr(dataloader._BaseDataLoaderIter, "next"):
        dataloader._BaseDataLoaderIter.next = dataloader._BaseDataLoaderIter.__next__

    for name, stand_in in (("IPython", {"embed": None}), ("tensorboardX", vars(torch.utils.tensorboard))):
        try:
            __import__(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__dict__.update({k: v for k, v in stand_in.items() if not k.startswith("__")})
            sys.modules[name] = module
    try:
        import six  # noqa: F401
    except ImportError:  # utils.py: `from six.moves import urllib` (Python 2 compatibility)
        import urllib
        six = types.ModuleType("six")
        six.moves = types.ModuleType("six.moves")
        six.moves.urllib = urllib
        sys.modules.update({"six": six, "six.moves": six.moves})
    try:
        import skimage.transform  # noqa: F401
    except ImportError:
        import cv2

        def resize(image, shape, order=0, **_):
            assert order == 0, "the stand-in only resizes velodyne depth (nearest neighbour)"
            return cv2.resize(np.asarray(image, dtype=np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        skimage = types.ModuleType("skimage")
        skimage.transform = types.ModuleType("skimage.transform")
        skimage.transform.resize = resize
        sys.modules.update({"skimage": skimage, "skimage.transform": skimage.transform})


def main() -> None:
    checkout, timing_json, skip = sys.argv[1], sys.argv[2], int(sys.argv[3])
    assert sys.argv[4] == "--", "usage: monodepth2_run.py CHECKOUT TIMING_JSON SKIP -- OPTIONS"
    sys.argv = [f"{checkout}/train.py", *sys.argv[5:]]
    started = time.perf_counter()
    _adapt_to_current_libraries()
    sys.path.insert(0, checkout)
    import torch
    from options import MonodepthOptions
    from trainer import Trainer

    options = MonodepthOptions()
    for action in options.parser._actions:  # the bench's own split folder: lift --split's fixed choices
        if action.dest == "split":
            action.choices = None
    opts = options.parse()
    trainer = Trainer(opts)
    init_s = time.perf_counter() - started
    total = len(trainer.train_loader)
    if total <= skip:
        sys.exit(f"monodepth2_run: {total} steps in the epoch, need more than SKIP={skip}")
    cuda = trainer.device.type == "cuda"
    marks, count = {}, [0]
    step = trainer.model_optimizer.step

    def timed_step(*args, **kwargs):
        result = step(*args, **kwargs)
        count[0] += 1
        if count[0] in (skip, total):
            if cuda:
                torch.cuda.synchronize()
            marks[count[0]] = time.perf_counter()
        return result

    trainer.model_optimizer.step = timed_step
    trainer.train()
    seconds = marks[total] - marks[skip]
    result = {"trainer": "monodepth2", "steps": total, "timed_steps": total - skip, "timed_s": round(seconds, 3),
              "samples_per_s": (total - skip) * opts.batch_size / seconds, "init_s": round(init_s, 1),
              "wall_s": round(time.perf_counter() - started, 1), "device": str(trainer.device)}
    if cuda:
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    with open(timing_json, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
