"""mtsr_monai.inference"""
