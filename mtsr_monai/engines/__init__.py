"""mtsr_monai.engines"""
