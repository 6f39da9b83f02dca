"""ffhw: Forward-Forward networks with standard, quantized and spiking layers, aimed at efficient hardware."""
__version__ = "0.1.0"
