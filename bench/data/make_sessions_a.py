#!/usr/bin/env python3
"""Generate a synthetic but realistic request log for a shared public
text-to-video service (8 hours, 60 users, 800 requests).

Standard library only, deterministic (fixed seed).  Writes sessions-a.jsonl
next to this script and prints summary statistics.

Model:
  * 60 users with log-normally skewed activity (a few heavy users, many light).
  * Each user has 1..6 sessions; within a session consecutive requests are
    30 s .. 5 min apart (wait for the video, then edit); sessions of the same
    user are separated by breaks of 15 min .. 1.5 h.
  * A session starts from a structured scene (subject/action/setting/style/
    camera/lighting), a hand-written free-form prompt, a trending prompt
    (copied verbatim or lightly tweaked; popularity decays after it "goes
    viral"), or, for some users, a prompt in their own language.
  * Each follow-up request is an edit of the previous one: restyle, change the
    action, change the setting, change the subject, camera/lighting tweak,
    exact resubmission (re-roll), revert to an earlier version, wording tweak
    or adding detail, or a brand-new idea.
  * Per-user writing habits: verbosity, lowercase, dropped punctuation and
    consistent typos (deterministic per user and word).
  * A few power users pin a seed and keep it while tweaking wording.
"""
import json
import math
import os
import random
import re
import statistics
import zlib
from collections import Counter

SEED = 20240611
rng = random.Random(SEED)

DAY = 8 * 3600.0
N_REQ = 800
N_USERS = 60
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "sessions-a.jsonl")

# ---------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------

# category -> setting tags the category plausibly appears in
CAT_TAGS = {
    "pet": ["urban", "nature", "beach", "indoor", "snow", "space", "fantasy"],
    "wild": ["nature", "snow", "fantasy", "beach"],
    "sea": ["underwater"],
    "bird": ["nature", "sky", "urban"],
    "person": ["urban", "nature", "beach", "indoor", "space", "fantasy", "snow"],
    "car": ["urban", "nature", "snow"],
    "air": ["sky"],
    "boat": ["water"],
    "food": ["kitchen"],
    "product": ["studio"],
    "creature": ["fantasy", "sky", "nature", "snow"],
    "robot": ["urban", "space", "indoor", "fantasy"],
}

# (text, category, weight)  -- weights boost the popular shared themes
SUBJECTS = [
    # pets (cats & dogs are the most shared theme)
    ("a golden retriever", "pet", 3), ("a corgi puppy", "pet", 3),
    ("a black cat", "pet", 3), ("a fluffy orange kitten", "pet", 3),
    ("a siamese cat", "pet", 2), ("a husky", "pet", 2),
    ("a tabby cat", "pet", 3), ("a shiba inu", "pet", 2),
    ("a pug wearing sunglasses", "pet", 1.5), ("a border collie", "pet", 1),
    ("a tiny hamster", "pet", 1), ("a white rabbit", "pet", 1),
    ("a dachshund in a knitted sweater", "pet", 1),
    # wild animals
    ("a red fox", "wild", 1.5), ("a giant panda", "wild", 1.5),
    ("a baby elephant", "wild", 1), ("a polar bear", "wild", 1),
    ("a herd of wild horses", "wild", 1), ("a white horse", "wild", 1),
    ("a hedgehog", "wild", 1), ("a raccoon", "wild", 1), ("a lion", "wild", 1.2),
    ("a snow leopard", "wild", 1), ("a chameleon", "wild", 0.7),
    ("a capybara", "wild", 1.2), ("a tiny frog", "wild", 0.7),
    ("a penguin", "wild", 1), ("a grey wolf", "wild", 1),
    # sea life (ocean theme)
    ("a sea turtle", "sea", 1.5), ("a humpback whale", "sea", 1.5),
    ("a glowing jellyfish", "sea", 1.5), ("an octopus", "sea", 1),
    ("a school of koi fish", "sea", 1), ("a pod of dolphins", "sea", 1.2),
    ("a great white shark", "sea", 1),
    # birds
    ("a barn owl", "bird", 1), ("a hummingbird", "bird", 1),
    ("a bald eagle", "bird", 1), ("a flock of flamingos", "bird", 0.8),
    ("a monarch butterfly", "bird", 1), ("a red parrot", "bird", 0.7),
    # people
    ("a young woman with a red umbrella", "person", 2),
    ("an old fisherman", "person", 1), ("a skateboarder", "person", 1.2),
    ("a ballerina", "person", 1.2), ("a street musician with a saxophone", "person", 1),
    ("a little girl in a yellow raincoat", "person", 1.5), ("a samurai", "person", 1.5),
    ("a businessman in a grey suit", "person", 1), ("a surfer", "person", 1),
    ("an astronaut", "person", 2.5), ("a cyclist", "person", 1),
    ("a marathon runner", "person", 0.7), ("an elderly grandmother", "person", 1),
    ("a DJ with headphones", "person", 0.8), ("a knight in silver armor", "person", 1.2),
    ("a cowboy", "person", 1), ("a figure skater", "person", 0.8),
    ("a boy with a kite", "person", 0.8), ("a hip hop dancer", "person", 1),
    ("a monk in orange robes", "person", 0.8), ("a scuba diver", "person", 0.6),
    ("a woman in a flowing white dress", "person", 1.5), ("a firefighter", "person", 0.6),
    ("a man in a long black coat", "person", 1), ("two kids", "person", 0.8),
    # vehicles
    ("a vintage red convertible", "car", 1), ("a steam locomotive", "car", 1),
    ("a motorcycle", "car", 1), ("a yellow taxi", "car", 0.8),
    ("a monster truck", "car", 0.6), ("a cyberpunk hover car", "car", 1),
    ("an old vespa", "car", 0.6),
    ("a hot air balloon", "air", 1), ("a fighter jet", "air", 0.8),
    ("a paper airplane", "air", 0.6), ("a zeppelin", "air", 0.6),
    ("a sailboat", "boat", 1), ("a cargo ship", "boat", 0.6),
    ("a pirate ship", "boat", 1.2),
    # food (cooking close-ups theme)
    ("a juicy burger", "food", 1.5), ("a bowl of ramen", "food", 2),
    ("a stack of pancakes with maple syrup", "food", 1.2), ("a ribeye steak", "food", 1.5),
    ("fresh salmon nigiri", "food", 1), ("a chocolate cake", "food", 1.2),
    ("fresh strawberries", "food", 1), ("a pepperoni pizza", "food", 1.2),
    ("pork dumplings", "food", 1), ("a cup of coffee with latte art", "food", 1.2),
    ("street tacos", "food", 1), ("a buttery croissant", "food", 0.8),
    ("a bowl of pho", "food", 0.6), ("garlic shrimp", "food", 0.6),
    # products
    ("a perfume bottle", "product", 1.2), ("a pair of white sneakers", "product", 1.2),
    ("a smartwatch", "product", 1), ("a luxury wristwatch", "product", 1),
    ("a can of soda", "product", 1), ("a skincare serum bottle", "product", 1),
    ("wireless headphones", "product", 1), ("a red lipstick", "product", 0.8),
    ("a glass bottle of craft beer", "product", 0.6), ("a scented candle", "product", 0.6),
    # fantasy creatures (dragons theme)
    ("a red dragon", "creature", 2.5), ("a baby dragon", "creature", 2),
    ("a phoenix", "creature", 1.2), ("a unicorn", "creature", 1),
    ("a giant kaiju", "creature", 1), ("a tiny fairy", "creature", 1),
    ("a griffin", "creature", 0.7), ("an ice dragon", "creature", 1.5),
    ("a white wolf spirit", "creature", 0.8),
    # robots / sci-fi
    ("a small rusty robot", "robot", 1.2), ("a giant mech", "robot", 1),
    ("an android with a human face", "robot", 0.8), ("a retro tin robot", "robot", 0.8),
    ("a little green alien", "robot", 0.8),
]

SUBJ_TAG_OVERRIDE = {
    "a penguin": ["snow", "beach", "underwater"],
    "a polar bear": ["snow", "underwater"],
    "a snow leopard": ["snow", "nature"],
    "a scuba diver": ["underwater", "beach"],
    "a surfer": ["beach", "water"],
    "a zeppelin": ["sky", "urban"],
    "a hot air balloon": ["sky", "nature"],
    "a paper airplane": ["sky", "urban", "indoor"],
    "a cyberpunk hover car": ["urban", "space"],
    "a steam locomotive": ["nature", "snow"],
    "an astronaut": ["space", "beach", "urban", "nature", "underwater"],
    "a tiny fairy": ["fantasy", "nature", "indoor"],
    "a pirate ship": ["water", "sky"],
}

SETTINGS = {
    "urban": [
        "on a rainy neon street in Tokyo", "in a busy New York crosswalk",
        "on a rooftop at sunset", "in a narrow alley in Venice",
        "in an empty subway station", "in a cyberpunk city at night",
        "on a quiet suburban street", "in an old european town square",
        "in a crowded night market", "on a bridge over the river at night",
        "in an abandoned warehouse", "on the streets of Paris in autumn",
        "in a Hong Kong alley full of neon signs", "in Times Square at night",
        "on a rain-soaked city street at night",
    ],
    "nature": [
        "in a sunflower field", "in a misty pine forest",
        "in a desert with huge sand dunes", "in a field of lavender",
        "at the edge of a waterfall", "in a bamboo forest",
        "in a meadow full of wildflowers", "in the autumn woods",
        "in tall grass at golden hour", "on a cliff overlooking the sea",
        "in a dense jungle", "in a cherry blossom park",
    ],
    "snow": [
        "on a snowy mountain peak", "on a frozen lake",
        "in a snowy village at night", "in a blizzard",
    ],
    "beach": [
        "on a tropical beach", "on a beach at sunset",
        "on a black sand beach in Iceland", "in shallow waves on the shore",
    ],
    "water": [
        "on a stormy sea", "on a calm lake at dawn",
        "in a harbor at sunset", "through giant ocean waves",
    ],
    "underwater": [
        "in a coral reef", "in the deep ocean", "in a giant aquarium",
        "in clear turquoise water", "in a kelp forest",
    ],
    "sky": [
        "above the clouds", "over a city skyline at night",
        "through a thunderstorm", "over snowy mountains",
    ],
    "space": [
        "on the moon", "on the surface of Mars", "floating in space near Saturn",
        "inside a space station", "on an alien planet with two suns",
    ],
    "indoor": [
        "in a cozy living room", "in an old library", "on a kitchen windowsill",
        "in a messy bedroom", "in a cafe by the window",
        "in an empty ballroom", "in a laundromat at night",
    ],
    "kitchen": [
        "on a wooden cutting board", "in a cast iron skillet",
        "on a marble countertop", "in a busy restaurant kitchen",
        "on a plate in a fancy restaurant", "on a picnic table outside",
    ],
    "studio": [
        "on a white studio background", "on a black reflective surface",
        "on a rotating pedestal", "on a bathroom shelf with plants",
        "floating in mid air against a pastel background", "on wet rocks by a waterfall",
    ],
    "fantasy": [
        "in an enchanted forest with glowing mushrooms", "in a medieval castle courtyard",
        "over a burning village", "in a floating island kingdom",
        "inside a crystal cave", "in the ruins of an ancient temple",
    ],
}
SETTING_BOOST = {  # shared themes: cityscapes at night, ocean, space
    "on a rainy neon street in Tokyo": 3, "in a cyberpunk city at night": 2.5,
    "on a rain-soaked city street at night": 2, "over a city skyline at night": 2,
    "on the moon": 2, "floating in space near Saturn": 1.5,
    "on a beach at sunset": 2, "through giant ocean waves": 1.5,
    "in a cozy living room": 1.5,
}

ACTIONS = {
    "pet": ["running", "chasing its tail", "jumping to catch a frisbee",
            "sleeping curled up", "rolling around", "playing with a ball of yarn",
            "shaking off water", "walking toward the camera", "yawning",
            "sitting and looking around", "dancing on its hind legs",
            "pouncing on a toy", "wearing a tiny hat"],
    "wild": ["running", "walking slowly", "hunting", "sleeping",
             "drinking from a stream", "looking straight into the camera",
             "leaping", "eating"],
    "sea": ["swimming slowly", "gliding through the water", "breaching",
            "drifting", "swimming toward the camera"],
    "bird": ["flying", "landing on a branch", "spreading its wings",
             "hovering in place", "diving down"],
    "person": ["walking", "dancing", "running", "looking back over their shoulder",
               "playing guitar", "reading a book", "doing a backflip",
               "standing still while the crowd rushes past", "laughing",
               "jumping", "twirling", "crying", "eating ramen",
               "taking a selfie", "skateboarding", "meditating"],
    "car": ["driving fast", "slowly passing by", "drifting around a corner",
            "parked with the headlights on", "speeding away from the camera"],
    "air": ["flying", "drifting slowly", "taking off", "circling"],
    "boat": ["sailing", "crashing through the waves", "slowly drifting"],
    "food": ["sizzling", "being sliced in slow motion", "with steam rising",
             "being plated by a chef", "spinning slowly on a turntable",
             "falling onto the plate in slow motion", "being cut in half"],
    "product": ["rotating slowly", "with water splashing around it",
                "lit by a moving spotlight", "floating and spinning",
                "being unboxed"],
    "creature": ["breathing fire", "flying", "sleeping on a pile of gold",
                 "roaring", "landing", "walking slowly", "spreading its wings"],
    "robot": ["walking", "dancing", "repairing itself", "looking up at the sky",
              "waving", "watering a small plant"],
}
# categories whose actions are not plain verbs ("is ... " heads would be odd)
NONVERB_CATS = ("food", "product")

STYLES = [
    "in watercolor style", "anime style", "studio ghibli style", "cinematic, 35mm film",
    "pixar style 3d animation", "claymation", "oil painting", "photorealistic, 8k",
    "black and white film noir", "vaporwave aesthetic", "cyberpunk style",
    "low poly 3d", "pencil sketch", "ukiyo-e woodblock print", "stop motion",
    "vintage 1970s home video", "VHS footage", "documentary style",
    "national geographic style", "wes anderson style, symmetrical", "lego style",
    "impressionist painting", "pixel art", "cel shaded", "hyperrealistic",
    "dreamy, soft focus", "horror movie style", "music video style",
    "GoPro footage", "paper cutout animation", "charcoal drawing", "80s synthwave",
    "kodak portra film look", "unreal engine 5 render", "tilt shift miniature",
    "like a 90s anime", "makoto shinkai style",
]
CAMERAS = [
    "slow dolly in", "tracking shot", "aerial drone shot", "close-up",
    "extreme close-up", "wide angle", "low angle shot", "handheld camera",
    "slow motion", "time-lapse", "orbit shot around the subject",
    "shallow depth of field", "POV shot", "crane shot rising up", "static shot",
    "whip pan", "macro lens", "85mm lens", "fisheye lens", "dolly zoom",
    "camera slowly pulls back", "steadicam following from behind",
]
LIGHTINGS = [
    "golden hour lighting", "soft morning light", "neon lighting", "dramatic rim light",
    "volumetric fog", "moody blue hour", "harsh midday sun", "candlelight", "backlit",
    "overcast soft light", "studio lighting", "moonlight", "god rays",
    "warm sunset glow", "flickering fluorescent light", "high contrast lighting",
    "lit by lightning flashes", "soft window light",
]
EXTRAS = [
    "highly detailed", "4k", "smooth motion", "realistic", "film grain",
    "beautiful color grading", "masterpiece", "no text", "ultra realistic",
    "8k resolution", "sharp focus", "natural movement", "best quality",
    "vivid colors", "subtle camera shake", "loopable",
]

TRENDING = [
    "An astronaut riding a horse across the surface of Mars, dust clouds, cinematic, golden hour",
    "a cat wearing a tiny chef hat cooking pasta in a cozy kitchen, pixar style",
    "Two pirate ships battling inside a cup of coffee, macro shot",
    "a corgi surfing a huge wave at sunset, slow motion, GoPro footage",
    "Paper boats sailing down a flooded city street after the rain, tilt shift, miniature",
    "A tiny dragon asleep inside a teacup, steam rising, macro lens, soft light",
    "A woman walking through Tokyo at night, neon reflections on the wet pavement, shot on 35mm film",
    "giant jellyfish floating above a city skyline at dusk",
    "A panda playing electric guitar on stage at a rock concert, crowd going wild",
    "time-lapse of a city changing from day to night, drone shot",
    "a golden retriever wearing VR goggles chasing virtual butterflies in a living room",
    "An old man feeding pigeons in a park, autumn leaves falling, wes anderson style",
    "A whale swimming through the clouds above a sleeping town, moonlight",
    "lego astronauts building a base on the moon, stop motion",
    "Cyberpunk samurai walking through heavy rain, neon signs, glowing katana",
    "close up of a chocolate lava cake being cut open, molten center flowing out, food commercial",
    "A snow globe with a tiny village inside, snow swirling, camera slowly zooms in",
    "a hamster driving a tiny car through a supermarket aisle",
    "A library where the books fly off the shelves like birds",
    "An underwater city made of glass, glowing fish swimming through the streets",
    "raccoon DJ at a forest rave, lasers and fog",
    "Ink dropping into water and forming the shape of a dragon, black background, macro",
    "grandma skateboarding down a steep San Francisco hill, people cheering",
]
TREND_POP = [3, 2.5, 1.5, 2.5, 1.2, 2, 2.5, 1, 1.5, 1, 1.5, 1, 1.5, 1, 2, 1.2, 1, 1.5, 0.8, 1, 1.2, 0.8, 1]

FREEFORM = [
    "slow motion water droplet hitting a still pond, macro, ripples",
    "abstract swirling colors like oil on water, mesmerizing loop",
    "my grandmothers kitchen in the 1960s, sunlight through lace curtains, dust floating in the air, a radio on the counter",
    "a lighthouse in a storm at night, huge waves crashing against the rocks, lightning in the distance",
    "fireworks over the harbour reflected in the water",
    "timelapse of clouds rolling over mountains",
    "neon geometric shapes morphing into each other, black bg",
    "a man in a suit slowly dissolving into sand, surreal",
    "rain on a window with blurry city lights behind it, lofi vibe",
    "birthday cake with candles being blown out, kids cheering",
    "A cozy log cabin in the snow, smoke coming out of the chimney, warm light in the windows, night",
    "hands shaping clay on a pottery wheel close up",
    "autumn leaves falling in slow motion in a park, sun shining through",
    "northern lights dancing over a frozen lake in norway",
    "a paper airplane flying through an open plan office, people looking up",
    "logo reveal, gold particles come together to form the letters, dark background",
    "melting clock hanging on a tree branch, dali style",
    "a volcano erupting at night, lava flowing into the ocean and making steam",
    "coffee being poured into a glass cup slow motion",
    "a tiny house on the back of a giant turtle walking through the desert",
    "infinite fractal zoom, psychedelic colors",
    "empty swimming pool at night lit by underwater lights, liminal space",
    "train passing through the countryside in the rain, view from inside the window",
    "ink painting of mountains slowly appearing on rice paper",
    "real estate walkthrough of a modern minimalist living room with big windows, smooth gimbal",
    "man proposing to his girlfriend on the beach at sunset, she says yes, emotional",
    "first dance at a wedding, fairy lights, slow",
    "soldiers marching through muddy trenches, ww1, black and white archival footage",
    "the earth seen from the ISS slowly rotating",
    "a chess game where the pieces move on their own, candlelit room",
    "cute cartoon avocado dancing",
    "Cinematic trailer shot: a lone figure stands on a dune watching a colossal spaceship descend through the haze, epic scale, hans zimmer vibes",
    "dog",
    "sunset",
    "cat playing piano",
    "product video for handmade lavender soap, natural light, rustic wooden table",
    "a ferris wheel turning at night in an empty carnival, eerie",
    "bees flying around a sunflower, macro, summer",
    "colored smoke rising in slow motion, studio, black background",
    "old polaroid photos coming to life",
    "medieval battle, hundreds of knights charging across a field, epic wide shot",
    "a goldfish in a bowl watching the world outside the window",
    "make a video of a man walking his dog in the park",
    "the mona lisa smiling and winking",
    "kid opening christmas presents in the morning, home video look",
    "tree growing from a seed to a full tree, timelapse",
    "A girl studying at her desk by the window, lofi anime vibe, rain outside, a cat sleeping next to her books",
    "tornado approaching a farmhouse in kansas, dramatic sky",
    "liquid gold flowing over black rocks",
    "taxi driver in mumbai weaving through traffic, handheld, documentary",
    "bioluminescent waves crashing on a beach at night",
    "vinyl record spinning on a turntable, close up of the needle, warm light",
    "an origami crane unfolding itself",
    "aerial view of rice terraces in bali at sunrise",
    "a robot vacuum escaping from an apartment, comedic",
    "skeleton playing drums in a graveyard, halloween",
    "hyperlapse through a busy train station",
    "a sloth in a business suit giving a powerpoint presentation",
    "two old men playing chess in a park in buenos aires",
    "crystal clear stream running over pebbles, relaxing",
    "inside of a mechanical watch, gears turning, macro",
    "someone typing on a mechanical keyboard with rgb lights",
    "desert highway at night, a single car's headlights, stars overhead",
    "lightning striking the eiffel tower",
    "a haunted victorian house, the camera slowly approaches the front door and it creaks open",
    "a wolf howlling at the full moon on a snowy hill",
    "beautifull girl smiling at camera in a flower feild",
    "realistic video of a dinosuar walking through a modern city",
    "a jar of honey with the honey dripping off a wooden dipper",
    "3d render of a cute mushroom house, isometric, soft pastel colors",
    "A stormtrooper-looking robot doing yoga on a mountain top at sunrise",
]

FOREIGN = {
    "zh": [
        ["一只橘猫在窗台上晒太阳，慢慢打哈欠", "一只橘猫在窗台上晒太阳，慢慢打哈欠，电影感，4K",
         "一只橘猫在窗台上睡觉，窗外下着雪", "一只橘猫在窗台上晒太阳，水彩画风格"],
        ["夜晚的上海外滩，灯光倒映在黄浦江上，航拍镜头", "夜晚的上海外滩，灯光倒映在黄浦江上，航拍镜头，延时摄影",
         "下雨的夜晚，上海外滩，霓虹灯，航拍"],
        ["一条中国龙在云海中飞翔，金色鳞片，史诗感", "一条中国龙在云海中飞翔，金色鳞片，水墨画风格",
         "一条中国龙盘旋在山顶的寺庙上方，闪电，史诗感"],
        ["古风少女在竹林中舞剑，落叶飘飘，慢动作", "古风少女在竹林中舞剑，落叶飘飘，慢动作，电影级光影",
         "古风少女在雪地中舞剑，慢动作"],
        ["熊猫在竹林里吃竹子，特写", "熊猫宝宝在竹林里打滚，特写", "熊猫在竹林里吃竹子，特写，皮克斯风格"],
    ],
    "ja": [
        ["桜並木の下を歩く女子高生、アニメ風、春の光", "桜並木の下を歩く女子高生、アニメ風、夕焼け",
         "桜並木の下を自転車で走る女子高生、アニメ風"],
        ["ラーメンから湯気が立ち上るクローズアップ、シズル感", "ラーメンから湯気が立ち上るクローズアップ、シズル感、スローモーション",
         "つけ麺を箸で持ち上げるクローズアップ、湯気"],
        ["雨の新宿の夜、ネオン、シネマティック", "雨の新宿の夜、ネオン、傘をさした人々、シネマティック",
         "雪の新宿の夜、ネオン、シネマティック"],
        ["柴犬が雪の中ではしゃいでいる", "柴犬が雪の中ではしゃいでいる、スローモーション", "柴犬が海辺ではしゃいでいる"],
    ],
    "es": [
        ["un perro corriendo en la playa al atardecer", "un perro corriendo en la playa al atardecer, cámara lenta",
         "un perro saltando las olas en la playa al atardecer", "un gato corriendo en la playa al atardecer"],
        ["calle de un pueblo blanco en andalucía con flores, luz de mañana, toma con dron",
         "calle de un pueblo blanco en andalucía con flores, luz de mañana, toma con dron, estilo acuarela"],
        ["Una abuela cocinando paella en una cocina antigua, vapor, luz cálida, estilo documental",
         "Una abuela cocinando paella al aire libre, vapor, luz cálida, estilo documental",
         "una abuela cocinando paella en una cocina antigua, estilo pixar"],
        ["mariachis tocando en una plaza de noche, luces de colores",
         "mariachis tocando en una plaza de noche, luces de colores, cinematográfico"],
        ["astronauta caminando por una selva tropical, niebla, rayos de sol",
         "astronauta caminando por una selva tropical de noche, luciérnagas"],
    ],
    "de": [
        ["Ein Fuchs läuft durch einen verschneiten Wald, Morgennebel, Zeitlupe",
         "Ein Fuchs läuft durch einen verschneiten Wald, Morgennebel, Zeitlupe, Teleobjektiv",
         "Ein Fuchs springt kopfüber in den Schnee, Morgennebel, Zeitlupe"],
        ["Alte Straßenbahn fährt durch Berlin bei Nacht, Regen, Neonlichter",
         "Alte Straßenbahn fährt durch Berlin bei Nacht, Regen, Neonlichter, 35mm Film",
         "alte straßenbahn fährt durch berlin im schnee"],
        ["Bierkrug wird gefüllt, Schaum läuft über, Nahaufnahme, Werbespot",
         "Bierkrug wird gefüllt, Schaum läuft über, Nahaufnahme, Werbespot, Zeitlupe"],
        ["Burg auf einem Felsen über dem Rhein bei Sonnenaufgang, Drohnenflug",
         "Burg auf einem Felsen über dem Rhein im Nebel, Drohnenflug"],
    ],
    "fr": [
        ["un croissant doré qui sort du four, vapeur, gros plan",
         "un croissant doré qui sort du four, vapeur, gros plan, ralenti"],
        ["la tour eiffel sous la pluie la nuit, reflets sur les pavés",
         "la tour eiffel sous la neige la nuit, reflets sur les pavés, style aquarelle"],
    ],
    "pt": [
        ["ondas quebrando em uma praia do rio de janeiro, drone, pôr do sol",
         "ondas quebrando em uma praia do rio de janeiro, drone, pôr do sol, câmera lenta"],
        ["um papagaio colorido voando pela floresta amazônica",
         "um papagaio colorido voando pela floresta amazônica, estilo pixar"],
    ],
    "ko": [
        ["비 오는 서울 골목, 네온사인, 시네마틱", "비 오는 서울 골목, 네온사인, 고양이가 걸어간다, 시네마틱"],
        ["한강 위로 지는 노을, 타임랩스", "한강 위로 지는 노을, 타임랩스, 드론 촬영"],
    ],
}
FOREIGN_SUFFIX = {
    "zh": ["，电影感", "，4K高清", "，宫崎骏风格", "，慢动作"],
    "ja": ["、4K", "、ジブリ風", "、スローモーション"],
    "es": [", estilo anime", ", 4k", ", cámara lenta"],
    "de": [", im Anime-Stil", ", 4K", ", Aquarell"],
    "fr": [", style anime", ", 4k"],
    "pt": [", estilo anime", ", 4k"],
    "ko": [", 애니메이션 스타일", ", 4K"],
}
EN_SUFFIX = [", cinematic, 4k", ", anime style", ", realistic", ", 8k"]

# small personal tweaks applied to copied trending prompts
WORD_SWAPS = [
    ("cat", "dog"), ("dog", "cat"), ("Mars", "the moon"), ("corgi", "shiba inu"),
    ("panda", "raccoon"), ("rain", "snow"), ("Tokyo", "Seoul"), ("sunset", "night"),
    ("golden retriever", "husky"), ("whale", "giant koi fish"), ("horse", "camel"),
    ("hamster", "guinea pig"), ("grandma", "grandpa"), ("dragon", "phoenix"),
    ("coffee", "tea"), ("pigeons", "ducks"), ("samurai", "ninja"),
    ("jellyfish", "manta rays"), ("San Francisco", "Lisbon"), ("village", "castle"),
]
TREND_APPEND = [
    "4k", "but at night", "make it anime", "more realistic", "hyper detailed",
    "in the style of studio ghibli", "vertical video", "pixar style", "slow motion",
    "cinematic", "but its raining", "with a cat",
]

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------

def wchoice(items, weights, r=rng):
    return r.choices(items, weights=weights, k=1)[0]


def cap(s):
    return s[:1].upper() + s[1:] if s else s


def h32(*parts):
    return zlib.crc32("|".join(parts).encode("utf-8"))


def subj_tags(subj):
    text, cat, _ = subj
    return SUBJ_TAG_OVERRIDE.get(text, CAT_TAGS[cat])


def pick_setting(subj, exclude=None):
    tags = subj_tags(subj)
    cands = [s for t in tags for s in SETTINGS[t] if s != exclude]
    w = [SETTING_BOOST.get(s, 1.0) for s in cands]
    return wchoice(cands, w)


def pick_action(cat, exclude=None):
    cands = [a for a in ACTIONS[cat] if a != exclude]
    return rng.choice(cands)


def pick_subject(exclude=None, need_tag=None, cat=None):
    cands = [s for s in SUBJECTS if s[0] != exclude
             and (need_tag is None or need_tag in subj_tags(s))
             and (cat is None or s[1] == cat)]
    if not cands and cat is not None:
        return pick_subject(exclude, need_tag, None)
    if not cands:
        return pick_subject(exclude, None, None)
    return wchoice(cands, [s[2] for s in cands])


def setting_tag(setting):
    for t, lst in SETTINGS.items():
        if setting in lst:
            return t
    return None


def misspell(word, h):
    n = len(word)
    i = 1 + h % (n - 2)
    k = (h >> 8) % 3
    if k == 0:  # swap adjacent
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if k == 1:  # drop a letter
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]  # double a letter


def apply_habits(text, user):
    """Per-user writing habits, deterministic so edits keep the same typos."""
    if user["typo"] > 0:
        def fix(m):
            w = m.group(0)
            h = h32(user["id"], w.lower())
            if len(w) >= 5 and (h % 1000) < user["typo"] * 1000:
                return misspell(w, h >> 10)
            return w
        text = re.sub(r"[A-Za-z]+", fix, text)
    if user["lower"]:
        text = text.lower()
    if user["nopunct"]:
        text = text.replace(",", "").replace(".", "").replace(":", "")
    return text.strip()


# ---------------------------------------------------------------------------
# Prompt states and rendering
# ---------------------------------------------------------------------------

HEADS = 6
MOD_ORDERS = [
    ("style", "camera", "lighting", "extras"),
    ("camera", "lighting", "style", "extras"),
    ("lighting", "style", "camera", "extras"),
    ("style", "lighting", "camera", "extras"),
    ("extras", "style", "camera", "lighting"),
]


def render_scene(st):
    subj, cat = st["subj"][0], st["subj"][1]
    act, sett = st["act"], st["setting"]
    head = st["head"]
    if cat in NONVERB_CATS and head in (2, 5):
        head = 0
    if head == 0:
        h = f"{subj} {act} {sett}"
    elif head == 1:
        h = f"{cap(sett)}, {subj} {act}"
    elif head == 2:
        h = f"{subj} {sett}, {act}"
    elif head == 3:
        h = f"video of {subj} {act} {sett}"
    elif head == 4:
        h = f"{cap(subj)} {act} {sett}"
    else:
        h = f"{cap(subj)} is {act} {sett}."
    mods = []
    for key in MOD_ORDERS[st["order"]]:
        if key == "extras":
            mods.extend(st["extras"])
        elif st.get(key):
            mods.append(st[key])
    if not mods:
        return h.rstrip(".")
    if h.endswith("."):
        return h + " " + cap(", ".join(mods)) + "."
    return h + ", " + ", ".join(mods)


def render_text(st):
    parts = [st["base"]] + [v for _, v in st["mods"]]
    return ", ".join(parts)


def render_foreign(st):
    return FOREIGN[st["lang"]][st["chain"]][st["idx"]] + st["suffix"]


def render(st, user):
    if st["kind"] == "scene":
        return apply_habits(render_scene(st), user)
    if st["kind"] == "text":
        return apply_habits(render_text(st), user) if not st.get("verbatim") else render_text(st)
    return render_foreign(st)


def new_scene(user):
    v = user["verb"]
    subj = pick_subject()
    st = {
        "kind": "scene", "subj": subj, "act": pick_action(subj[1]),
        "setting": pick_setting(subj),
        "style": rng.choice(STYLES) if rng.random() < (0.35, 0.7, 0.95)[v] else None,
        "camera": rng.choice(CAMERAS) if rng.random() < (0.1, 0.5, 0.9)[v] else None,
        "lighting": rng.choice(LIGHTINGS) if rng.random() < (0.05, 0.35, 0.85)[v] else None,
        "extras": rng.sample(EXTRAS, (0, rng.randint(0, 1), rng.randint(1, 3))[v]),
        "head": user["head"] if rng.random() < 0.6 else rng.randrange(HEADS),
        "order": user["order"] if rng.random() < 0.7 else rng.randrange(len(MOD_ORDERS)),
    }
    return st


def tweak_trending(text):
    r = rng.random()
    if r < 0.45:
        swaps = [(a, b) for a, b in WORD_SWAPS if re.search(r"\b%s\b" % re.escape(a), text)]
        if swaps:
            a, b = rng.choice(swaps)
            return re.sub(r"\b%s\b" % re.escape(a), b, text, count=1)
    if r < 0.75:
        return text + ", " + rng.choice(TREND_APPEND)
    if r < 0.9 and "," in text:
        return text.rsplit(",", 1)[0]
    return text.lower()


def new_trending(t):
    w = []
    for i, pop in enumerate(TREND_POP):
        dt = t - TREND_T0[i]
        w.append(pop * math.exp(-dt / (3 * 3600)) if dt >= 0 else 0.02 * pop)
    i = wchoice(range(len(TRENDING)), w)
    text = TRENDING[i]
    verbatim = rng.random() < 0.6
    if not verbatim:
        text = tweak_trending(text)
    return {"kind": "text", "base": text, "mods": [], "verbatim": verbatim, "src": "trend"}


def new_freeform():
    return {"kind": "text", "base": rng.choice(FREEFORM), "mods": [], "verbatim": False,
            "src": "free"}


def new_foreign(lang):
    return {"kind": "foreign", "lang": lang, "chain": rng.randrange(len(FOREIGN[lang])),
            "idx": 0, "suffix": ""}


def new_idea(user, t):
    r = rng.random()
    if user["lang"] and r < 0.7:
        return new_foreign(user["lang"]), "foreign"
    r = rng.random()
    if r < user["p_trend"]:
        return new_trending(t), "trending"
    if r < user["p_trend"] + user["p_free"]:
        return new_freeform(), "freeform"
    return new_scene(user), "scene"


def set_mod(st, key, val):
    st["mods"] = [(k, v) for k, v in st["mods"] if k != key] + [(key, val)]


def edit(st, user, t):
    """Return (new_state, edit_kind)."""
    st = json.loads(json.dumps(st))  # deep copy (all JSON-able)
    if st["kind"] == "scene":
        st["subj"] = tuple(st["subj"])
        kinds = ["restyle", "action", "setting", "subject", "camera_light",
                 "resubmit", "reword", "revert", "new"]
        w = [18, 13, 12, 10, 16, 15, 6, 4, 6]
        k = wchoice(kinds, w)
        if k == "restyle":
            st["style"] = rng.choice([s for s in STYLES if s != st["style"]])
        elif k == "action":
            st["act"] = pick_action(st["subj"][1], exclude=st["act"])
        elif k == "setting":
            st["setting"] = pick_setting(st["subj"], exclude=st["setting"])
        elif k == "subject":
            tag = setting_tag(st["setting"])
            same_cat = rng.random() < 0.5
            subj = pick_subject(exclude=st["subj"][0], need_tag=tag,
                                cat=st["subj"][1] if same_cat else None)
            if subj[1] != st["subj"][1]:
                st["act"] = pick_action(subj[1])
            st["subj"] = subj
        elif k == "camera_light":
            if rng.random() < 0.55:
                st["camera"] = rng.choice([c for c in CAMERAS if c != st["camera"]])
            else:
                st["lighting"] = rng.choice([l for l in LIGHTINGS if l != st["lighting"]])
        elif k == "reword":
            if rng.random() < 0.5:
                st["head"] = rng.choice([h for h in range(HEADS) if h != st["head"]])
            else:
                extra = rng.choice([e for e in EXTRAS if e not in st["extras"]])
                st["extras"].append(extra)
        return st, k
    if st["kind"] == "text":
        kinds = ["restyle", "camera_light", "resubmit", "reword", "new"]
        w = [26, 22, 26, 14, 12]
        k = wchoice(kinds, w)
        if k == "restyle":
            set_mod(st, "style", rng.choice(STYLES))
            st["verbatim"] = False
        elif k == "camera_light":
            if rng.random() < 0.55:
                set_mod(st, "camera", rng.choice(CAMERAS))
            else:
                set_mod(st, "lighting", rng.choice(LIGHTINGS))
            st["verbatim"] = False
        elif k == "reword":
            r = rng.random()
            if r < 0.5:
                set_mod(st, "extra", rng.choice(EXTRAS))
            elif r < 0.75 and st["src"] == "trend":
                st["base"] = tweak_trending(st["base"])
            elif "," in st["base"]:
                st["base"] = st["base"].rsplit(",", 1)[0]
            else:
                set_mod(st, "extra", rng.choice(EXTRAS))
            st["verbatim"] = False
        return st, k
    # foreign
    kinds = ["variant", "resubmit", "suffix", "new"]
    k = wchoice(kinds, [45, 25, 18, 12])
    chain = FOREIGN[st["lang"]][st["chain"]]
    if k == "variant":
        st["idx"] = rng.choice([i for i in range(len(chain)) if i != st["idx"]])
    elif k == "suffix":
        pool = FOREIGN_SUFFIX[st["lang"]] + EN_SUFFIX
        st["suffix"] = rng.choice([s for s in pool if s != st["suffix"]])
    return st, k


# ---------------------------------------------------------------------------
# Users, activity and timing
# ---------------------------------------------------------------------------

def request_counts():
    raw = sorted((rng.lognormvariate(0, 1.0) for _ in range(N_USERS)), reverse=True)
    lo, hi = 1.0, 1000.0
    for _ in range(60):
        k = (lo + hi) / 2
        c = [min(75, max(2, round(x * k))) for x in raw]
        if sum(c) < N_REQ:
            lo = k
        else:
            hi = k
    c = [min(75, max(2, round(x * hi))) for x in raw]
    i = 0
    while sum(c) != N_REQ:  # fix rounding on the mid-range users
        j = 5 + (i % 20)
        c[j] += 1 if sum(c) < N_REQ else -1
        i += 1
    return c


TREND_T0 = [rng.uniform(-2 * 3600, 6.5 * 3600) for _ in TRENDING]

counts = request_counts()
ids = [f"u{i:02d}" for i in range(1, N_USERS + 1)]
rng.shuffle(ids)  # activity rank is independent of the id number
LANGS = ["zh", "zh", "ja", "es", "es", "de", "fr", "pt", "ko"]
lang_slots = rng.sample(range(4, N_USERS), len(LANGS))
seed_slots = [1, 4, 7, 11, 16, 23, 30]  # power users (by activity rank) who pin seeds

users = []
for rank, (uid, n) in enumerate(zip(ids, counts)):
    heavy = n >= 20
    verb = wchoice([0, 1, 2], [2, 5, 4] if heavy else [4, 4, 2])
    lower = rng.random() < (0.15 if heavy else 0.35)
    typo = wchoice([0.0, 0.06, 0.15], [70, 20, 10])
    u = {
        "id": uid, "n": n, "verb": verb, "lower": lower,
        "nopunct": lower and rng.random() < 0.3, "typo": typo,
        "lang": LANGS[lang_slots.index(rank)] if rank in lang_slots else None,
        "seedy": rank in seed_slots,
        "p_trend": 0.5 if n <= 5 else 0.22, "p_free": 0.25,
        "head": rng.randrange(HEADS), "order": rng.randrange(len(MOD_ORDERS)),
    }
    users.append(u)


def gap():
    # wait for the video (~1-2 min) + think/edit; 30 s .. 5 min
    return min(300.0, max(30.0, rng.triangular(30, 300, 75)))


def split_sessions(n):
    if n <= 3:
        s = 1
    elif n <= 8:
        s = rng.choice([1, 2])
    elif n <= 20:
        s = rng.choice([2, 2, 3])
    elif n <= 45:
        s = rng.choice([3, 4])
    else:
        s = rng.choice([4, 5, 6])
    cuts = sorted(rng.sample(range(1, n), s - 1)) if s > 1 else []
    bounds = [0] + cuts + [n]
    return [bounds[i + 1] - bounds[i] for i in range(s)]


def schedule(u):
    """Return a list of sessions, each a list of request times."""
    sizes = split_sessions(u["n"])
    rel = []
    for sz in sizes:
        ts = [0.0]
        for _ in range(sz - 1):
            ts.append(ts[-1] + gap())
        rel.append(ts)
    durs = [ts[-1] for ts in rel]
    breaks = [rng.uniform(900, 5400) for _ in range(len(sizes) - 1)]
    total = sum(durs) + sum(breaks)
    if total > DAY * 0.97:
        f = max(0.0, (DAY * 0.97 - sum(durs)) / max(1.0, sum(breaks)))
        breaks = [b * f for b in breaks]
        total = sum(durs) + sum(breaks)
    start = rng.uniform(0, max(0.0, DAY - total - 60))
    out, cur = [], start
    for i, ts in enumerate(rel):
        out.append([cur + x for x in ts])
        cur += durs[i] + (breaks[i] if i < len(breaks) else 0)
    return out


SEED_FAVS = [42, 1234, 7777, 12345, 2024, 888, 69420, 1, 31337, 999]


def new_seed():
    return rng.choice(SEED_FAVS) if rng.random() < 0.5 else rng.randrange(0, 2**31)


records = []
edit_counter = Counter()
start_counter = Counter()
for u in users:
    for sess_times in schedule(u):
        st, src = new_idea(u, sess_times[0])
        start_counter[src] += 1
        seed = None
        pin_at = None
        if u["seedy"] and rng.random() < 0.6:
            pin_at = rng.choice([0, 1, 1, 2])  # usually after seeing a first result
        history = [st]
        for j, t in enumerate(sess_times):
            if j > 0:
                nst, k = edit(st, u, t)
                if k == "new":
                    nst, src = new_idea(u, t)
                    start_counter[src] += 1
                    if seed is not None:
                        seed = new_seed() if rng.random() < 0.5 else None
                elif k == "revert" and len(history) >= 2:
                    nst = history[-2]
                edit_counter[k] += 1
                st = nst
                history.append(st)
            if pin_at is not None and j == pin_at and seed is None:
                seed = new_seed()
            rec = {"t": round(t, 1), "tenant": "public", "prompt": render(st, u), "user": u["id"]}
            if seed is not None:
                rec["seed"] = seed
            records.append(rec)

records.sort(key=lambda r: (r["t"], r["user"]))
assert len(records) == N_REQ

with open(OUT, "w", encoding="utf-8") as f:
    for r in records:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")

# ---------------------------------------------------------------------------
# Summary statistics
# ---------------------------------------------------------------------------
seen, repeats, cross = {}, 0, 0
for r in records:
    p = r["prompt"]
    if p in seen:
        repeats += 1
        if r["user"] not in seen[p]:
            cross += 1
        seen[p].add(r["user"])
    else:
        seen[p] = {r["user"]}
per_user = Counter(r["user"] for r in records)
pu = sorted(per_user.values())
n_seed = sum(1 for r in records if "seed" in r)
total_edits = sum(edit_counter.values())

print(f"requests:            {len(records)}")
print(f"users:               {len(per_user)}")
print(f"time span:           {records[0]['t']:.1f} .. {records[-1]['t']:.1f} s "
      f"({records[-1]['t'] / 3600:.2f} h)")
print(f"distinct prompts:    {len(seen)}")
print(f"exact repeats:       {repeats} ({repeats / len(records):.1%}) "
      f"[same user: {repeats - cross}, other user: {cross}]")
print(f"requests per user:   min {pu[0]} / median {statistics.median(pu)} / max {pu[-1]}")
print(f"with seed:           {n_seed} ({n_seed / len(records):.1%}), "
      f"users pinning: {len({r['user'] for r in records if 'seed' in r})}")
print("session/idea starts: " + ", ".join(f"{k} {v}" for k, v in start_counter.most_common()))
print("follow-up edits:     " + ", ".join(
    f"{k} {v / total_edits:.0%}" for k, v in edit_counter.most_common()))
