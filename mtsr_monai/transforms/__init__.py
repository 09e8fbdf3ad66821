"""mtsr_monai.transforms"""
