"""Installable package: the ``anchoropt`` library, the ``trainers`` plugin package and console commands."""

from setuptools import find_packages, setup

setup(
    name="anchoropt",
    version="0.1.0",
    description="AnchorOPT (dynamic anchor-based prompt learning for CLIP) as a Dassl-style plugin, "
    "with CoOp, CoCoOp, MaPLe and DePT baselines",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["anchoropt", "anchoropt.*", "trainers", "trainers.*"]),
    # the toy world's pretrained tiny CLIP (fp16, used token rows only; anchoropt-toyworld pretrain re-makes it)
    package_data={"anchoropt.toyworld": ["weights/*.pt"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        # the `clip` package imports pkg_resources, which setuptools 81 removed
        "openai-clip>=1.0",
        "setuptools<81",
        "yacs>=0.1.8",
        "tabulate>=0.8",
        "gdown>=4.7",
        "tqdm>=4.60",
        "numpy>=1.22",
        "scipy>=1.8",
        "Pillow>=9.0",
        "submitit>=1.5",
    ],
    extras_require={"test": ["pytest>=7.0", "pytest-xdist>=3.5", "ruff==0.17.6"]},
    entry_points={
        "console_scripts": [
            "anchoropt-train=anchoropt.cli.train:console_main",
            "anchoropt-prepare-data=anchoropt.cli.prepare_data:console_main",
            "anchoropt-descriptions-download=anchoropt.cli.descriptions:download_main",
            "anchoropt-descriptions-generate=anchoropt.cli.descriptions:generate_main",
            "anchoropt-results=anchoropt.cli.results:console_main",
            "anchoropt-positions=anchoropt.cli.positions:console_main",
            "anchoropt-sweep=anchoropt.cli.sweep:console_main",
            "anchoropt-feature-cache=anchoropt.cli.feature_cache:console_main",
            "anchoropt-toyworld=anchoropt.cli.toyworld:console_main",
            "anchoropt-demo=anchoropt.cli.demo:console_main",
        ],
    },
)
