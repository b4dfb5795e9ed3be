"""Virtual vehicles over MQTT for the demo, end-to-end tests and benchmarks.

No Django imports here: the simulator talks to the platform only over MQTT.
"""
