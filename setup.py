"""Maps the two import packages onto their folders (metadata lives in pyproject.toml).

`keel` (SDK + generated stubs) lives in clients/python/keel and `keel_server` in services/;
setuptools cannot express two renamed roots in pyproject alone.
"""

from setuptools import find_packages, setup

ROOTS = {"keel": "clients/python/keel", "keel_server": "services"}

packages: list[str] = []
package_dir: dict[str, str] = {}
for name, folder in ROOTS.items():
    packages.append(name)
    package_dir[name] = folder
    for sub in find_packages(folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir, include_package_data=True)
