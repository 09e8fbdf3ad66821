"""mtsr_monai.networks"""
