"""Package list for setuptools: modules/ and schemas/ ship as jcstate.modules and jcstate.schemas.

Metadata lives in pyproject.toml; only the package list is computed here, so that adding a
resource folder under modules/ needs no packaging edit.
"""

from setuptools import find_packages, setup

packages = find_packages(include=["jcstate", "jcstate.*"])
packages += ["jcstate.modules"] + ["jcstate.modules." + p for p in find_packages("modules")]
packages += ["jcstate.schemas"]

setup(packages=packages)
