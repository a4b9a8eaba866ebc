"""The prompt files, shipped as the package ``ecgqa.prompts`` (setup.py maps it onto
this folder, the one copy that is edited; find a file with ``ecgqa.assets.prompt_file``).

    qa.yaml               the signal path: two layouts, the measured-values line
    image_qa.yaml         the image path (LoRA), the ``<image>`` slot in the first turn
    image_qa_signal.yaml  the image path in the signal path's wording
"""
