"""mtsr_monai.metrics"""
