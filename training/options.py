"""What the `geopt-train` commands share: the training size option.

Every default lives in its config dataclass; the commands' options read theirs from there
(`default=Config.field`) and name their parameters after the fields they fill, so that
`formats.files.fields_of` builds each config by keyword.
"""
import click


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (width, height), both multiples of 32 and at least 64; click.BadParameter otherwise."""
    try:
        width, height = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT such as 640x192, got {text!r}")
    if width % 32 or height % 32 or width < 64 or height < 64:
        raise click.BadParameter(f"{width}x{height}: both sides must be multiples of 32 and at least 64")
    return width, height


def size_callback(ctx, param, text: str | None) -> tuple[int, int] | None:
    return None if text is None else parse_size(text)


def loop_options(config_class, pictures: str):
    """The options of `training.loop.LoopConfig` that both training commands take, with `config_class`'s
    defaults; `pictures` says what the TensorBoard pictures show."""
    options = [
        click.option("--device", default=config_class.device, show_default=True,
                     help="auto (CUDA when present), cpu, cuda, cuda:1..."),
        click.option("--precision", type=click.Choice(["auto", "bf16", "fp32"]), default=config_class.precision,
                     show_default=True, help="auto: bf16 autocast on CUDA, float32 on CPU."),
        click.option("--compile", is_flag=True, help="torch.compile the model."),
        click.option("--checkpoint-every", type=click.IntRange(1), default=config_class.checkpoint_every,
                     show_default=True, help="Steps between checkpoints (RUN/last.pt, written atomically)."),
        click.option("--log-every", type=click.IntRange(1), default=config_class.log_every, show_default=True,
                     help="Steps between scalar logs."),
        click.option("--image-every", type=click.IntRange(1), default=config_class.image_every, show_default=True,
                     help=f"Steps between TensorBoard pictures ({pictures})."),
        click.option("--nan-patience", type=click.IntRange(1), default=config_class.nan_patience, show_default=True,
                     help="Non-finite losses in a row tolerated (each step skipped) before the run stops."),
        click.option("--seed", type=int, default=config_class.seed, show_default=True, help="Random seed."),
        click.option("--resume", is_flag=True, help="Continue RUN/last.pt: step, optimiser, schedule and RNG."),
    ]

    def decorate(command):
        for option in reversed(options):
            command = option(command)
        return command
    return decorate
