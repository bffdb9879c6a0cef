"""What pyproject.toml cannot say: conf/ (at the top of the repository, where Hydra users look for
it) ships inside the package as fer_lightning/conf, where an installed package finds its configs."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(include=["fer_lightning", "fer_lightning.*"]),
        "fer_lightning.conf",  # its files: package-data in pyproject.toml
    ],
    package_dir={"fer_lightning.conf": "conf"},
)
