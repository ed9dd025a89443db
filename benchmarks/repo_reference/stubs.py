"""Permissive stand-ins for third-party packages the repositories import but model building never uses."""
import importlib.abc, importlib.machinery, sys, types

STUBBED = {"cv2", "pandas", "requests", "PIL", "IPython", "torchvision", "matplotlib", "seaborn", "scipy",
           "tqdm", "psutil", "git", "wandb", "clearml", "comet_ml", "tensorboard",
           "torch.utils.tensorboard", "yaml_include", "albumentations", "pycocotools", "ultralytics"}


class Dummy:
    def __init__(self, *a, **k): pass
    def __call__(self, *a, **k): return Dummy()
    def __getattr__(self, n): return Dummy()
    def __iter__(self): return iter(())
    def __getitem__(self, k): return Dummy()
    def __setitem__(self, k, v): pass
    def __mro_entries__(self, bases): return (object,)
    def __bool__(self): return False


class StubModule(types.ModuleType):
    __path__ = []
    def __getattr__(self, n):
        if n.startswith("__"):
            raise AttributeError(n)
        return Dummy()


class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in STUBBED or name in STUBBED:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None
    def create_module(self, spec):
        return StubModule(spec.name)
    def exec_module(self, module):
        module.__version__ = "0.0.0"


sys.meta_path.insert(0, Finder())
