"""Quality: calibrated rules files, scorers, calibration and online audits.

* `rules`: the rules file `flexcache calibrate` writes and ``planner.rules_file`` loads,
  checksummed and bound to the generation signature it was measured on.
* `scorers`: how a video is judged (the toy world's reader, CLIP, PSNR/SSIM against a reference,
  any callable).
* `calibrate`: fits the depth of each rule on the operator's own model and prompts.
* `audits`: sampled hits run again uncached, so a rule that starts to hurt steps back.
"""
