"""Shared by the trainer tests: a small video, metrics rows, a free port for torch.distributed."""

import csv
import socket

import pytest

from conftest import numbered_frames, write_video


@pytest.fixture(scope="session")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "train.mp4", numbered_frames(48), g=16)


def metrics(path):
    with open(path) as f:
        return [r for r in csv.DictReader(f)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
