"""``custom_pipeline=`` targets for a plain ``DiffusionPipeline.from_pretrained`` of a sned
pipeline folder. Each file re-exports one installed class (diffusers wants exactly one
pipeline class per file); nothing is read from the model folder:

    from diffusers import DiffusionPipeline
    from sned.pipelines.diffusers_pipeline import HUB_MODULE
    pipe = DiffusionPipeline.from_pretrained(folder, custom_pipeline=HUB_MODULE,
                                             trust_remote_code=True)

(``trust_remote_code=True`` lets diffusers import that installed sned file.)
"""
