"""mtsr_monai.losses"""
