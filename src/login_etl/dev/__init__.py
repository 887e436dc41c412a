"""Developer tooling: throwaway local services, the demo, the benchmark and the
event generator. Needs the ``[local]`` extra (moto); the service never imports it.
"""
