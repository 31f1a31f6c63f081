"""`geopt-train`: geometric pretraining on shards, backbone export, depth transfer, evaluation, prediction.

The group only gathers the commands of the two pipelines (`training.flow.cli`, `training.depth.cli`).
"""
import click

from training.depth.cli import (evaluate_command, evaluate_disps_command, export_gt_command, predict_command,
                                transfer_command)
from training.flow.cli import convert_checkpoint_command, export_command, pretrain_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """Train GeoPt: pretrain a structure encoder on mined video, export it, transfer it to depth, evaluate."""


for command in (pretrain_command, export_command, convert_checkpoint_command, transfer_command, evaluate_command,
                predict_command, evaluate_disps_command, export_gt_command):
    main.add_command(command)


if __name__ == "__main__":
    main()
