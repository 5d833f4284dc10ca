"""Demo-only code: fault injection through baggage, and the "broken on purpose" switches (all off by
default). It plugs into services/telemetry from outside; never copy it into a real service.
"""
