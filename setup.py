from setuptools import find_packages, setup

setup(
    name="contiv-sdn",
    version="0.1.0",
    description="Policy-based multi-host networking for containers (Contiv-compatible), on Twisted",
    python_requires=">=3.11",
    packages=find_packages(include=["contiv_sdn", "contiv_sdn.*", "drivers", "drivers.*"])
    + ["twisted.plugins"],
    package_data={"twisted": ["plugins/*.py"], "contiv_sdn.ops": ["web/*"], "drivers.cni": ["shim.c"]},
    install_requires=[
        # [tls]: pyOpenSSL + service_identity, for the HTTPS API (--tls-cert) and rediss://
        "twisted[tls]>=24.7",
        "txredisapi>=1.4.10",
        "klein>=24.8",
        "treq>=24.9",
        "os-ken>=4.2",
        "pyroute2>=0.9",
        "ovs>=3.1",
        # DNS wire format (contiv_sdn.dns)
        "dnspython>=2.6",
        # /metrics of both daemons (contiv_sdn.ops.metrics)
        "prometheus_client>=0.20",
        # kubeconfig files are YAML (drivers/kubernetes/config.py; --mode kubernetes)
        "PyYAML>=6.0",
    ],
    # what the test suite needs beyond the product (bounded property-based fuzzing; the
    # web view is tested in Debian's chromium through Debian's chromedriver by selenium)
    extras_require={"test": ["hypothesis>=6.100", "openapi-spec-validator>=0.7",
                             "selenium>=4.10"]},
    entry_points={
        "console_scripts": [
            "netctl=contiv_sdn.netctl.main:main",
            "contiv-cni=drivers.cni.main:main",
        ]
    },
)
