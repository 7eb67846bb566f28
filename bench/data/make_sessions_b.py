#!/usr/bin/env python3
"""Generate bench/data/sessions-b.jsonl: a synthetic ~6 hour request log of a
public text-to-video web app (one shared tenant, many users).

Standard library only, deterministic (fixed seed).  Run:  python3 make_sessions_b.py

Model (short version)
  * 62 users in four activity tiers (power / regular / casual / one-shot), each
    with a persona: language, verbosity, casing, emoji and typo habits, seed
    habit, interests, how often they copy from / post to the community channel.
  * Every user has 1-4 sessions whose start times follow an afternoon->evening
    traffic curve.  A session is a sequence of "idea chains": a first prompt
    (hand-written, composed from large hand-written vocabularies, a scripted
    hand-written refinement chain, or copied from the community board) followed
    by refinements: regenerate, change style / camera / lighting / action /
    location / subject, add or remove details, fix a typo, add quality tags or
    negative instructions, elaborate, seed sweeps.
  * Think time = waiting for the render + watching + typing; some users queue
    several generations without waiting; occasional breaks.
  * A community board holds prompts posted before the log and prompts users post
    during it; others copy them verbatim (sometimes with the seed, "remix") or
    lightly edited, with popularity and recency driving what gets copied and a
    featured post partway through.
  * Discrete-event simulation (heap) so copying is causal.
"""
import heapq
import json
import math
import os
import random
import re
import statistics
from collections import Counter

SEED = 20241026
T_END = 6 * 3600.0          # log covers 14:00 -> 20:00
TARGET = (790, 815)         # request count we calibrate into
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_PATH = os.path.join(HERE, "sessions-b.jsonl")

# ---------------------------------------------------------------------------
# Users
# ---------------------------------------------------------------------------
POWER = ["pixelpilgrim", "mkv_renders", "vorticity", "lumen_ryo", "saturn_drip",
         "kaz-films", "neonmoth", "grainfield_ai"]
REGULAR = ["alice_92", "tobi_k", "framebyframe", "dustbowl_dan", "ines_ferreira",
           "chen_yu88", "jiwoo_park", "marcel-lfc", "olga_vetrova", "bananaphone",
           "ghostlight_7", "theo_makes", "quietkoi", "rubberduckdev", "sam_the_editor",
           "weird_cinema", "noodle_prince", "valeria_mx", "hikari_s", "corgi_enjoyer"]
CASUAL = ["b3n", "mira_lune", "jpg_goblin", "fernando_rj", "liu-xiaotian", "sungmin02",
          "claire_b", "dmitri_k", "pato_loco", "zoe_makes_stuff", "captain_crunch_42",
          "emmy-w", "ozzy_vfx", "reyna_art", "hugo_lemaire", "ant_on_a_log"]
ONESHOT = ["guest_4821", "guest_9173", "xXdragonXx", "marta_pl", "user20391",
           "kittykat_07", "jt_99", "bored_at_work", "lucas-br", "anon_owl",
           "fresh_prince_88", "yuki_tanaka", "pedro_h", "nina_k", "tempacct_3",
           "moonwalker_", "sofia-g", "user83310"]

LANG_OF = {  # user -> (language, probability a new idea is written in it)
    "ines_ferreira": ("pt", 0.8), "fernando_rj": ("pt", 0.9), "lucas-br": ("pt", 1.0),
    "pedro_h": ("pt", 0.6), "chen_yu88": ("zh", 0.75), "liu-xiaotian": ("zh", 0.9),
    "jiwoo_park": ("ko", 0.7), "sungmin02": ("ko", 0.85), "marcel-lfc": ("fr", 0.6),
    "claire_b": ("fr", 0.5), "hugo_lemaire": ("fr", 0.85), "olga_vetrova": ("ru", 0.7),
    "dmitri_k": ("ru", 0.9), "valeria_mx": ("es", 0.75), "pato_loco": ("es", 0.9),
    "yuki_tanaka": ("ja", 1.0), "hikari_s": ("ja", 0.45), "lumen_ryo": ("ja", 0.15),
    "marta_pl": ("es", 0.0),
}
SEED_USERS = {"pixelpilgrim": 0.75, "mkv_renders": 0.6, "vorticity": 0.85, "kaz-films": 0.5,
              "grainfield_ai": 0.7, "framebyframe": 0.55, "rubberduckdev": 0.6,
              "weird_cinema": 0.35}

# ---------------------------------------------------------------------------
# Vocabularies (hand written)
# ---------------------------------------------------------------------------
CATS = {
    "animals": dict(w=16, subj=[
        "a corgi", "a golden retriever puppy", "a tabby cat", "a fat orange cat", "a capybara",
        "a red panda", "a family of ducks", "an octopus", "a sea turtle", "a fox", "a snow leopard",
        "a hamster", "a baby elephant", "a hummingbird", "a herd of wild horses",
        "a grumpy old bulldog", "a pair of otters", "a chameleon", "a koala", "a penguin",
        "a barn owl", "a shiba inu", "a raccoon", "a giant tortoise", "a husky", "a sloth",
        "a border collie", "a tiny frog", "a white rabbit", "a flock of flamingos"],
        act=["surfing a big wave", "chasing a butterfly", "sleeping in a sunbeam",
             "eating a slice of watermelon", "playing the piano", "skateboarding down a hill",
             "swimming through clear water", "running in slow motion",
             "wearing sunglasses and nodding to the music", "jumping into a pile of leaves",
             "sneezing", "staring into the camera", "riding a tiny bicycle", "catching a frisbee",
             "building a sandcastle", "stealing a cookie from the table",
             "dancing on its hind legs", "looking out of a rainy window", "drinking from a stream",
             "floating in a hot spring with a yuzu on its head", "yawning", "knocking a cup off a table",
             "playing in the snow", "rolling down a grassy hill", "reading a tiny newspaper"],
        loc=["on a beach", "in a snowy forest", "in a cozy living room", "in a neon-lit alley",
             "on a kitchen counter", "in a field of sunflowers", "at the bottom of the ocean",
             "in a japanese garden", "on the surface of the moon", "in a tiny apartment in Tokyo",
             "in a rainforest", "in the middle of Times Square", "on a wooden dock by a lake",
             "in an old library", "in a backyard", "on a sailboat", "in a bamboo forest"]),
    "people": dict(w=14, subj=[
        "an old fisherman", "a young woman with red hair", "a street dancer", "a samurai",
        "a little girl in a yellow raincoat", "an astronaut", "a chef", "a skateboarder",
        "a ballerina", "a grandma", "a businessman in a grey suit", "a jazz saxophonist",
        "a knight in rusty armor", "two kids", "a cowboy", "a DJ", "a surfer", "a marathon runner",
        "a buddhist monk", "a detective in a trench coat", "a young couple", "a boxer",
        "a woman in a white dress", "an old man with a long beard", "a nurse", "a firefighter"],
        act=["walking through the rain", "dancing alone", "playing guitar", "cooking noodles",
             "looking up at the stars", "running towards the camera", "laughing",
             "reading a letter and crying", "fighting with a sword", "drinking coffee by the window",
             "riding a horse at full gallop", "jumping off a cliff into the sea",
             "walking in slow motion", "turning around to face the camera", "spinning in circles",
             "waving goodbye from a train", "lighting a cigarette", "painting a mural",
             "doing a backflip", "shadow boxing", "singing into a microphone"],
        loc=["in a rainy Tokyo street", "in Paris", "in a wheat field", "in an abandoned warehouse",
             "on a rooftop", "in a 1950s diner", "in the desert", "in a crowded subway car",
             "on the streets of Lisbon", "in a misty bamboo forest", "on a mountain peak",
             "at a music festival", "in a Victorian ballroom", "in a small village in the alps",
             "in an empty hospital corridor", "in a laundromat", "on a pier", "in a boxing gym"]),
    "landscape": dict(w=9, subj=[
        "a waterfall", "the northern lights", "a thunderstorm", "a volcano", "a lonely tree",
        "ocean waves", "a field of lavender", "a glacier", "cherry blossom trees",
        "a desert canyon", "a mountain lake", "the milky way", "rice terraces", "a sea of clouds",
        "a lighthouse", "an autumn forest"],
        act=["in a timelapse", "under a starry sky", "seen from above", "with clouds rolling over",
             "as the sun rises", "in heavy rain", "during a storm", "with mist drifting through",
             "with the seasons changing", "slowly revealed by the fog"],
        loc=["in Iceland", "in the Scottish highlands", "in Patagonia", "in Norway", "in the Sahara",
             "in Yosemite", "on a remote island", "in Kyoto", "in the Dolomites", "in New Zealand",
             "in Bali", "in Lapland"]),
    "vehicles": dict(w=8, subj=[
        "a red vintage car", "a steam train", "a motorcycle", "a sailing boat",
        "a hot air balloon", "a yellow taxi", "a futuristic flying car", "a bullet train",
        "an old tram", "a formula 1 car", "a pirate ship", "a vespa", "a monster truck",
        "a black SUV", "a rusty pickup truck", "a fighter jet"],
        act=["driving along a coastal road", "speeding through the city", "drifting around a corner",
             "crossing a bridge", "flying over the city", "sailing through a storm",
             "parked in the rain", "racing through the desert", "taking off",
             "passing by in slow motion", "jumping over a ramp"],
        loc=["in Hong Kong", "in a cyberpunk city", "in New York", "on the Amalfi coast",
             "in Havana", "in 1980s Tokyo", "in a snowy mountain pass", "in Dubai",
             "in San Francisco", "in the Swiss alps", "on Route 66"]),
    "food": dict(w=6, subj=[
        "a stack of pancakes", "a bowl of ramen", "a chocolate cake", "a cheeseburger",
        "a plate of sushi", "a pizza", "a cup of coffee", "a croissant", "fresh strawberries",
        "a glass of iced lemonade", "three tacos", "bubble tea", "a steak", "a bowl of pho",
        "a donut"],
        act=["with syrup being poured on top", "being sliced in slow motion", "spinning slowly",
             "steaming", "with milk splashing around it", "melting", "being assembled piece by piece",
             "exploding into pieces", "falling onto a plate", "being dipped in chocolate"],
        loc=["on a marble countertop", "on a rustic wooden table", "in a cozy cafe",
             "at a street food market", "in a michelin star kitchen", "on a black background",
             "at a night market in Taipei"]),
    "products": dict(w=4, subj=[
        "a perfume bottle", "a pair of white sneakers", "a luxury watch", "a smartphone",
        "a can of soda", "a pair of headphones", "a lipstick", "a skincare serum bottle",
        "an electric car", "a mechanical keyboard", "a bottle of craft beer"],
        act=["rotating slowly", "surrounded by splashing water", "floating in the air",
             "emerging from smoke", "bursting through ice", "with petals falling around it",
             "on a rotating pedestal", "disassembling into its parts"],
        loc=["in a white studio", "on a black reflective surface", "in a forest clearing",
             "on wet rocks", "in a minimalist showroom", "on a sand dune"]),
    "fantasy": dict(w=10, subj=[
        "a dragon", "a wizard", "an elf archer", "a giant turtle carrying a city", "a phoenix",
        "a unicorn", "a floating castle", "a fairy", "a golem made of moss", "a witch",
        "a mermaid", "a tiny dragon", "an ancient tree spirit", "a griffin", "a kitsune"],
        act=["flying over a medieval town", "casting a spell", "rising from the ashes",
             "breathing fire", "walking through the forest", "swimming in a glowing lagoon",
             "sleeping on a pile of gold", "brewing a potion", "slowly waking up",
             "fighting a knight"],
        loc=["in an enchanted forest", "above the clouds", "in a crystal cave",
             "in a ruined castle", "in a misty valley", "in a magical library",
             "at the edge of the world", "in a fairy tale village"]),
    "scifi": dict(w=10, subj=[
        "a giant robot", "a spaceship", "a cyborg", "an alien", "a space station", "a mech",
        "an android", "a swarm of drones", "a colony on Mars", "a time traveler",
        "an AI hologram", "a cyberpunk hacker", "a rover"],
        act=["landing on an alien planet", "walking through a neon city", "repairing itself",
             "taking off into space", "fighting a giant monster", "waking up from cryosleep",
             "hovering over the ocean", "opening its eyes for the first time",
             "exploring a derelict ship", "falling apart"],
        loc=["on Mars", "in a cyberpunk city", "in orbit around Saturn",
             "in a post-apocalyptic wasteland", "inside a massive hangar", "on an ice planet",
             "in the year 3000", "in a flooded future city"]),
    "halloween": dict(w=8, subj=[
        "a jack-o'-lantern", "a witch on a broomstick", "a haunted house", "a skeleton",
        "a black cat", "a little ghost", "a pumpkin patch", "trick-or-treaters", "a scarecrow",
        "a vampire", "a zombie"],
        act=["glowing in the dark", "flying across the full moon", "dancing", "floating down the hallway",
             "carving a pumpkin", "waving at the camera", "rising from a grave", "knocking on the door",
             "handing out candy"],
        loc=["on halloween night", "in a foggy cemetery", "in a spooky forest", "in an old mansion",
             "in a small american town in autumn", "under a full moon"]),
    "abstract": dict(w=6, subj=[
        "colorful ink", "liquid metal", "geometric shapes", "a kaleidoscope", "smoke", "paint",
        "glowing particles", "fractals", "a singer", "a band", "a dancer in a silk dress",
        "iridescent bubbles"],
        act=["swirling in water", "morphing into different shapes", "exploding in slow motion",
             "pulsing to the beat", "flowing", "performing on stage", "lip syncing to the camera",
             "dancing in front of a LED wall"],
        loc=["on a black background", "in an infinite white room", "in space",
             "on a rooftop at night", "in a smoky club", "in a field at golden hour"]),
    "memes": dict(w=9, subj=[
        "a cat", "shrek", "a frog in a suit", "a hamster", "grandma", "a pigeon", "a goose",
        "a horse", "a shiba inu", "a raccoon", "a baby", "a bodybuilder", "a dog in a hoodie",
        "a banana", "the mona lisa"],
        act=["doing a tiktok dance", "eating spaghetti", "driving a lambo", "doing taxes",
             "giving a ted talk", "vibing to music", "breakdancing", "rapping",
             "lifting weights", "running for president", "ordering at a drive thru",
             "playing fortnite", "being interviewed on the news"],
        loc=["in a parking lot", "at the gym", "in the white house", "on live tv",
             "in a fast food restaurant", "at a wedding", "in the middle of a football game"]),
}

STYLES = [  # (phrase, weight) - trending ones weighted up
    ("cinematic", 8), ("anime style", 5), ("Studio Ghibli style", 5), ("Pixar style 3D animation", 4),
    ("claymation", 6), ("stop motion", 3), ("shot on 35mm film", 4), ("VHS footage", 3),
    ("black and white film noir", 2), ("watercolor painting", 2), ("photorealistic", 5),
    ("cyberpunk style", 3), ("vaporwave aesthetic", 1), ("low poly 3D", 1), ("oil painting style", 1),
    ("documentary style", 2), ("National Geographic style", 2), ("retro 80s synthwave", 2),
    ("Wes Anderson style", 3), ("hyperrealistic", 3), ("pixel art", 2), ("lego animation", 2),
    ("ukiyo-e woodblock print style", 1), ("GoPro footage", 2), ("security camera footage", 1),
    ("iPhone video", 2), ("music video style", 2), ("tilt-shift miniature", 1),
    ("dreamy and ethereal", 2), ("90s anime", 3), ("origami style", 1), ("Tim Burton style", 2),
    ("studio commercial", 1), ("dark fantasy", 2), ("lofi anime", 2),
]
CAMERAS = ["drone shot", "slow dolly in", "tracking shot", "handheld camera", "close-up",
           "extreme close-up", "wide angle", "aerial view", "low angle shot", "overhead shot",
           "FPV drone flying through", "static camera", "360 degree orbit around the subject",
           "slow pan from left to right", "zoom out to reveal the whole scene", "first person POV",
           "crane shot", "macro lens", "fisheye lens", "shallow depth of field", "dutch angle",
           "whip pan", "steadicam following from behind", "telephoto lens"]
LIGHTING = ["golden hour", "at sunset", "at night", "neon lights", "soft morning light",
            "moody lighting", "volumetric light", "dramatic backlight", "candlelight", "overcast sky",
            "blue hour", "harsh midday sun", "foggy", "studio lighting", "rim lighting", "god rays",
            "lit by lightning flashes", "under moonlight", "warm lamp light", "pink and orange sky"]
DETAILS = ["rain", "snow falling", "light fog", "fireflies", "cherry blossom petals floating",
           "lens flare", "bokeh background", "dust particles in the air", "reflections in puddles",
           "confetti", "sparks flying", "floating lanterns", "a rainbow in the background",
           "smoke", "bubbles", "a crowd cheering in the background", "wearing a tiny hat",
           "with a red scarf", "steam rising", "autumn leaves blowing", "birds flying overhead",
           "wind in the hair", "tiny people watching for scale", "glowing runes",
           "butterflies everywhere", "a full moon in the sky"]
QUALITY = ["4k", "8k", "ultra realistic", "highly detailed", "masterpiece", "best quality",
           "smooth motion", "60fps", "HDR", "sharp focus", "realistic physics",
           "trending on artstation", "award winning", "high quality", "detailed textures"]
NEGATIVE = ["no text", "no watermark", "no blur", "no extra fingers", "no morphing",
            "keep the face consistent", "don't change the character", "normal hands",
            "no distortion", "no subtitles", "same character the whole time", "no weird limbs"]
EXTRA_SENTENCES = [
    "The camera slowly pushes in.", "Make the movement smoother.", "At the end it looks directly at the camera.",
    "Keep it realistic, not cartoon.", "More dramatic!", "Everything is very quiet and calm.",
    "The whole shot is one continuous take.", "Loopable.", "It should feel like a dream.",
    "The background is slightly out of focus.", "Colors are warm and nostalgic.",
    "Nothing else moves except the subject.", "Make it funny.", "ending with a fade to black.",
    "Sound of rain.", "Like a movie trailer.", "Slow motion for the last two seconds.",
    "The camera shakes a little like it's handheld.", "very satisfying", "make it look expensive",
]
SHOT_OPENERS = ["Cinematic shot of", "A video of", "Footage of", "Drone footage of", "A close-up of",
                "Slow motion video of", "An animated short of", "A short film about",
                "Realistic video of", "a clip of"]
USER_PREFIXES = ["video of ", "make a video of ", "generate ", "pls make ", "create a video of ", "show me ",
                 "animate: ", "prompt: "]
EMOJI = ["🔥", "✨", "🐱", "🚀", "🌊", "😂", "🎃", "👻", "🌸", "💀", "🙏", "🎬", "😍", "🌙", "🐶", "❤️", "🍕", "⚡"]

NOUN_SWAPS = {  # for swapping the subject in free-form prompts
    "cat": ["dog", "raccoon", "fox", "hamster", "corgi"], "dog": ["cat", "wolf", "bear cub", "pig"],
    "man": ["woman", "robot", "old man", "kid"], "woman": ["man", "girl", "grandma", "android"],
    "girl": ["boy", "old lady", "robot girl"], "boy": ["girl", "old man", "puppy"],
    "dragon": ["phoenix", "giant eagle", "sea serpent"], "horse": ["zebra", "camel", "unicorn"],
    "car": ["motorcycle", "truck", "bus"], "frog": ["toad", "lizard", "duck"],
    "robot": ["android", "alien", "cyborg"], "astronaut": ["diver", "knight", "cat astronaut"],
    "fox": ["wolf", "lynx", "arctic fox"], "bear": ["panda", "polar bear"],
    "penguin": ["seal", "puffin"], "knight": ["samurai", "viking", "ninja"],
    "samurai": ["ninja", "knight", "cowboy"], "chef": ["grandma", "robot chef", "raccoon"],
    "whale": ["giant jellyfish", "manta ray", "blue whale"], "skeleton": ["zombie", "ghost", "vampire"],
    "octopus": ["squid", "crab"], "pumpkin": ["watermelon", "giant apple"], "duck": ["goose", "swan"],
    "lion": ["tiger", "panther"], "owl": ["raven", "parrot"], "train": ["tram", "bus"],
    "spaceship": ["submarine", "zeppelin"],
}
REWORDS = [("big", "huge"), ("cute", "adorable"), ("realistic", "hyper realistic"),
           ("slow motion", "super slow motion"), ("cinematic", "very cinematic"), ("fast", "really fast"),
           ("old", "ancient"), ("small", "tiny"), ("dark", "pitch black"), ("beautiful", "stunning"),
           ("walking", "strolling"), ("running", "sprinting"), ("night", "midnight"),
           ("happy", "joyful"), ("scary", "terrifying"), ("flying", "soaring"), ("a bit", "slightly"),
           ("very ", ""), ("moving", "gliding")]

# fully hand written one-off prompts (English)
HANDWRITTEN = [
    "cat surfing", "dog in space", "a man walking", "ocean", "fire tornado in a city",
    "Will Smith eating spaghetti", "sunset", "dancing robot", "horse", "a cool car",
    "a frog in a tiny business suit giving a TED talk, the audience claps politely",
    "two old men playing chess in a park in the rain, neither of them cares about the rain",
    "A lone astronaut sits on the edge of a crater on the moon, legs dangling, watching the Earth rise. "
    "Slow push in from behind. Silence, dust, cold blue light.",
    "Close up of a hand pouring honey over a stack of pancakes, the honey catching the morning light, "
    "shallow depth of field, food commercial",
    "timelapse of a city going from day to night, lights turning on one by one",
    "a lighthouse in a storm, huge waves crashing over it, cinematic",
    "grandma doing a kickflip", "hamster driving a tiny lamborghini through a kitchen",
    "POV you are a bee flying through a field of flowers",
    "a tiny knight riding a snail into battle, epic music video vibes",
    "Interior of a 1970s living room, a family watching TV, the TV shows only static. grainy film, faded colors",
    "underwater city made of glass, fish swimming between the buildings",
    "a goose chasing a man through a park, shaky phone footage",
    "sunflower field with the sun coming up behind the hills, drone flying low over the flowers",
    "A woman in a white dress walks through a burning field at dusk. Wide shot. She never looks back. "
    "The fire doesn't touch her.",
    "robot bartender making a cocktail in a neon bar, smooth camera",
    "Shot 1: close up of an old man's eyes opening. Shot 2: he gets out of bed slowly. Shot 3: wide shot "
    "of the empty house. Melancholic, soft window light, 35mm.",
    "lava lamp but its the whole ocean", "pikachu running through a forest",
    "spongebob in real life",
    "a realistic video of my cat (orange, fat, white paws) knocking a glass off the table",
    "car commercial: black SUV driving through a mountain road, dramatic clouds, drone following the car, "
    "ends with the car stopping at the edge of a cliff",
    "the last dinosaur watching the meteor fall", "ants building a city",
    "raindrops on a window, city lights blurred behind, cozy lofi vibe",
    "a skeleton playing drums in a garage band", "make a video of a horse running",
    "an epic battle between samurai and robots in a burning village, chaos, sparks, slow motion",
    "abstract flowing shapes in pastel colors, loopable",
    "a man opens a door and the whole ocean is behind it",
    "kitten trying to catch a laser pointer dot, misses and falls off the couch",
    "medieval market, people selling bread and fish, a cat steals a fish and runs",
    "beautiful girl smiling at the camera",
    "old VHS home video of a birthday party in 1994, kids blowing out the candles",
    "cyberpunk samurai standing on a rooftop in the rain, neon signs reflecting on his katana",
    "a whale swimming through the clouds above a small town",
    "Product shot: a glass bottle of cold brew coffee, condensation dripping, ice cubes falling around it, "
    "black background, rotating",
    "dancing pickles", "time lapse of a flower blooming",
    "a train going through a snowy landscape at night, warm light from the windows",
    "a teddy bear doing laundry", "fireworks over a lake, reflection in the water",
    "a boy and his dog watching the sunset from a hill",
    "someone typing on a laptop in a dark room only lit by the screen, hacker vibes",
    "the mona lisa starts laughing", "van gogh starry night but the stars are actually moving",
    "a rubber duck floating in a bathtub, then a tiny storm starts in the bathtub",
    "a huge wave made of cats", "penguins sliding down an icy hill one after another",
    "a 3D render of a cute robot waking up in a junkyard, pixar style",
    "a jellyfish glowing in the dark ocean, bioluminescent",
    "elderly couple dancing in their kitchen, warm light, handheld",
    "F1 pit stop in slow motion", "cinematic trailer for a horror movie set in a school at night",
    "a chef flips a pancake and it lands on his head", "a bonsai tree growing from a seed, timelapse",
    "a soldier walking home from war through a field of poppies",
    "a flying car taking off from a driveway in the suburbs", "tornado made of butterflies",
    "A fox trots across a frozen lake at dawn, its breath visible, the ice creaking under its paws. "
    "Telephoto lens, very quiet mood.",
    "a drummer in a smoky jazz club, close up on the sticks", "paper plane flying through a city",
    "octopus escaping from a jar", "a coffee cup but the coffee is a tiny ocean with a ship sailing in it",
    "a guy slipping on a banana peel, slow motion, sitcom", "cute anime girl walking through a city",
    "bob ross painting a landscape that comes to life",
    "a hundred drones forming a dragon in the night sky over a city",
    "desk setup tour, rgb lights, camera slowly gliding across the keyboard and monitors",
    "a polar bear walking through an abandoned shopping mall",
    "sourdough bread rising, timelapse, cozy kitchen",
    "My grandfather's farm in the 1960s, chickens running around, a red tractor, summer, super 8 film look",
    "a kid blowing a giant bubble and getting inside it and floating away",
    "a tiny astronaut exploring a giant kitchen",
    "a snowman melting in fast forward while looking sad",
    "neon jellyfish floating through a dark city street",
    "a man in a suit running from a giant wave of sand, action movie",
    "an elephant painting on a canvas", "the eiffel tower turning into a rocket and launching",
    "a library where the books fly like birds",
    "epic anime fight scene between two girls with swords on top of a train",
    "medusa turning a tourist into stone, funny",
    "a cow being abducted by a ufo at night, farm, grainy footage",
    "the ocean seen from inside a wave, surfer POV, gopro",
    "Opening credits of a 90s sitcom, the cast smiling and turning to the camera one by one",
    "time lapse of a painter painting a portrait",
    "a giant mech walking through tokyo at night in the rain, pacific rim vibes",
    "a single raindrop falling into a puddle, 1000fps",
    "hands making pasta from scratch, flour everywhere, overhead shot",
    "a bear catching salmon in a river, national geographic",
    "lofi girl but she falls asleep on her desk",
    "gorilla playing drums to in the air tonight",
    "idk something cool", "test", "a cat", "beautiful landscape 4k",
    "a dog that is also a cloud", "ghost in a bedsheet walking through a wheat field, 16mm",
    "trump and biden playing minecraft",
    "a realistic dragon landing on a skyscraper in new york, people screaming, news footage",
    "an ai robot painting a self portrait",
    "aerial shot of a winding road through an autumn forest, a single red car driving",
]

# scripted hand-written refinement chains (each used by at most one user)
SCRIPTED = [
    ("en", ["dog running", "golden retriever running on the beach",
            "golden retriever running on the beach at sunset, slow motion",
            "golden retriever puppy running on the beach at sunset, slow motion, low angle, water splashing",
            "golden retriever puppy running towards the camera on the beach at sunset, slow motion, low angle, "
            "water splashing, shot on 35mm film"]),
    ("en", ["a castle", "a castle on a cliff", "a gothic castle on a cliff above a stormy sea, lightning",
            "a gothic castle on a cliff above a stormy sea, lightning, drone shot circling the castle",
            "a gothic castle on a cliff above a stormy sea at night, lightning illuminating the towers, "
            "drone shot slowly circling the castle, dark fantasy"]),
    ("en", ["man eating noodles", "old man eating ramen in a tiny tokyo restaurant",
            "old man eating ramen in a tiny tokyo restaurant, steam, close up",
            "old man slurping ramen in a tiny tokyo restaurant at night, steam rising, close up on his face, "
            "warm light, film grain",
            "old man slurping ramen in a tiny tokyo restaurant at night, steam rising, close up on his face, "
            "warm light, film grain, rain outside the window"]),
    ("en", ["a spaceship", "a spaceship landing", "a huge spaceship landing in a desert",
            "a huge rusty spaceship slowly landing in a desert, dust everywhere",
            "a huge rusty spaceship slowly landing in a desert, dust everywhere, tiny people watching in the "
            "foreground for scale",
            "a huge rusty spaceship slowly landing in a desert at dusk, dust everywhere, tiny people watching in "
            "the foreground for scale, anamorphic lens flare"]),
    ("en", ["girl singing", "a girl singing into a microphone on a rooftop at night",
            "a girl with pink hair singing into a vintage microphone on a rooftop at night, city lights behind her",
            "a girl with pink hair singing into a vintage microphone on a rooftop at night, city lights behind "
            "her, wind in her hair, music video, slow push in",
            "a girl with pink hair singing into a vintage microphone on a rooftop at night, city lights behind "
            "her, wind in her hair, music video, slow orbit around her"]),
    ("en", ["a dragn flying over mountains", "a dragon flying over mountains",
            "a red dragon flying over snowy mountains",
            "a red dragon flying over snowy mountains, epic, aerial shot following the dragon"]),
    ("en", ["a cat sitting on a windowsill watching the rain, cozy, lofi",
            "a dog sitting on a windowsill watching the rain, cozy, lofi",
            "a raccoon sitting on a windowsill watching the rain, cozy, lofi",
            "a raccoon sitting on a windowsill watching the rain and eating a cookie, cozy, lofi"]),
    ("en", ["burger", "burger commercial", "juicy cheeseburger commercial, ingredients falling in slow motion",
            "juicy cheeseburger commercial, lettuce tomato cheese and patty falling in slow motion and stacking "
            "perfectly, black background, studio lighting",
            "juicy cheeseburger commercial, lettuce tomato cheese and patty falling in slow motion and stacking "
            "perfectly on the bun, black background, studio lighting, 4k, no text"]),
    ("en", ["a person doing a backflip", "a person doing a backflip, realistic",
            "a gymnast doing a backflip on a beach, realistic physics",
            "a gymnast doing a backflip on a beach, realistic physics, normal body, correct anatomy, no extra limbs",
            "a gymnast doing a single backflip on a beach, side view, static camera, realistic physics, "
            "correct anatomy"]),
    ("en", ["creepy hallway", "a creepy hospital hallway with flickering lights",
            "a creepy hospital hallway with flickering lights, camera slowly moving forward, something moves at "
            "the end of the hallway",
            "found footage of a creepy hospital hallway with flickering lights, camera slowly moving forward, a "
            "figure appears at the end of the hallway and disappears"]),
    ("en", ["🐸 frog", "a frog wearing a crown 👑", "a frog wearing a tiny crown sitting on a lily pad like a king 👑🐸",
            "a frog wearing a tiny golden crown sitting on a lily pad like a king, other frogs bowing to him, "
            "epic fantasy 👑🐸"]),
    ("en", ["colors", "colorful ink in water",
            "colorful ink drops blooming in water, macro, slow motion, black background",
            "colorful ink drops blooming in water, macro, slow motion, black background, purple and gold"]),
    ("en", ["old car driving", "a red 1960s convertible driving on a coastal road",
            "a red 1960s convertible driving on a coastal road in Italy, drone shot from above",
            "a red 1960s convertible driving on a coastal road in Italy at golden hour, drone shot from above "
            "following the car, cinematic"]),
    ("en", ["cat dj", "cat DJ at a club", "a cat DJ with headphones at a huge club, crowd jumping, lasers",
            "a cat DJ with headphones scratching records at a huge festival, crowd of dogs jumping, lasers, confetti"]),
    ("en", ["perfume ad", "perfume bottle in water",
            "luxury perfume bottle sinking into clear water, bubbles, slow motion, studio lighting",
            "luxury perfume bottle sinking into clear turquoise water, bubbles rising, slow motion, studio "
            "lighting, petals floating on the surface"]),
    ("en", ["halloween", "pumpkin", "a jack-o'-lantern glowing on a porch",
            "a jack-o'-lantern glowing on a porch on halloween night, leaves blowing, kids in costumes walking by "
            "in the background",
            "a jack-o'-lantern glowing on a porch on halloween night, leaves blowing, kids in costumes walking by "
            "in the background, spooky but cute, stop motion"]),
    ("en", ["capybara", "capybara in a hot spring",
            "capybara relaxing in a japanese hot spring with a yuzu on its head, snow falling",
            "capybara relaxing in a japanese hot spring with a yuzu on its head, snow falling, steam, very calm, "
            "close up"]),
    ("en", ["a knight", "a knight walking through fog", "a lone knight walking through thick fog in a dead forest, "
            "armor covered in moss", "a lone knight walking through thick fog in a dead forest, armor covered in "
            "moss, a giant shadow moves behind the trees, dark souls vibes", "a lone knight walking through thick "
            "fog in a dead forest, armor covered in moss, a giant shadow moves behind the trees, dark souls vibes, "
            "tracking shot from behind"]),
    ("en", ["Tokyo at night", "tokyo street at night in the rain, neon signs",
            "tokyo street at night in the rain, neon signs, a woman with a transparent umbrella walks past",
            "tokyo backstreet at night in heavy rain, neon signs reflecting in puddles, a woman with a transparent "
            "umbrella walks past the camera, blade runner mood"]),
    ("pt", ["gato tocando violão", "gato laranja tocando violão numa varanda",
            "gato laranja tocando violão numa varanda ao pôr do sol, estilo cinematográfico",
            "gato laranja tocando violão numa varanda ao pôr do sol, estilo cinematográfico, câmera lenta"]),
    ("zh", ["一条龙", "一条金色的龙在云里飞", "一条金色的龙在云海中飞翔，阳光穿过云层，电影感",
            "一条金色的龙在云海中飞翔，阳光穿过云层，电影感，航拍镜头跟随"]),
    ("ko", ["강아지", "강아지가 눈밭에서 뛰어노는 영상", "웰시코기가 눈밭에서 뛰어노는 영상, 슬로우 모션",
            "웰시코기가 눈밭에서 뛰어노는 영상, 슬로우 모션, 따뜻한 햇살"]),
    ("fr", ["paris sous la pluie", "paris sous la pluie la nuit, une femme avec un parapluie rouge",
            "paris sous la pluie la nuit, une femme avec un parapluie rouge traverse la rue, plan large, style film noir"]),
    ("ru", ["кот", "рыжий кот на подоконнике", "рыжий кот на подоконнике смотрит на снег, уютно",
            "рыжий кот на подоконнике смотрит на падающий снег, уютно, тёплый свет лампы, крупный план"]),
    ("es", ["perro bailando", "un perro salchicha bailando con sombrero de mariachi",
            "un perro salchicha bailando con sombrero de mariachi en una plaza de Oaxaca, día de fiesta",
            "un perro salchicha bailando con sombrero de mariachi en una plaza de Oaxaca, papel picado, "
            "gente aplaudiendo, estilo pixar"]),
    ("ja", ["猫", "こたつで寝ている猫", "こたつで丸くなって寝ている三毛猫、冬の夕方、窓の外は雪",
            "こたつで丸くなって寝ている三毛猫、冬の夕方、窓の外は雪、ジブリ風"]),
]

NON_EN = {
    "pt": dict(prompts=[
        "um gato laranja dormindo no sofá enquanto chove lá fora",
        "cachorro caramelo correndo na praia de Copacabana ao pôr do sol",
        "uma senhora vendendo acarajé numa rua de Salvador, câmera na mão, estilo documentário",
        "astronauta andando de skate na lua", "vídeo de um fusca antigo subindo a serra com neblina",
        "festa junina com fogueira e bandeirinhas, crianças dançando quadrilha",
        "uma onda gigante em Nazaré com um surfista descendo, visão de drone",
        "capivara tomando banho numa lagoa com uma laranja na cabeça",
        "um dragão voando sobre o Rio de Janeiro à noite", "bolo de chocolate sendo cortado em câmera lenta",
        "menino soltando pipa na laje, fim de tarde", "um bonde amarelo subindo uma ladeira em Lisboa",
        "torcida do flamengo cantando no maracanã, fogos"],
        mods=["estilo anime", "em câmera lenta", "ao pôr do sol", "estilo cinematográfico", "à noite",
              "com chuva", "estilo pixar", "4k realista", "visão de drone", "estilo desenho animado",
              "mais realista"]),
    "zh": dict(prompts=[
        "一只橘猫在窗台上晒太阳，尾巴轻轻摆动", "赛博朋克风格的上海夜景，霓虹灯，下着雨",
        "一个穿汉服的女孩在竹林里跳舞，慢动作", "熊猫在雪地里打滚", "中国古代宫殿，航拍镜头，日出",
        "一碗热腾腾的牛肉面，特写，蒸汽升腾", "孙悟空在云端翻筋斗", "宇航员在火星上种土豆",
        "水墨画风格的山水，云雾缭绕，一叶小舟", "小狗穿着宇航服在月球上跳", "重庆的轻轨穿过居民楼",
        "下雨天的老街，一个人撑着油纸伞走过"],
        mods=["电影感", "慢动作", "日落时分", "宫崎骏风格", "赛博朋克风格", "4K高清", "航拍", "水墨风格",
              "夜晚", "下雪", "超写实"]),
    "ko": dict(prompts=[
        "고양이가 피아노를 치는 영상", "비 오는 서울 밤거리를 걷는 여자, 시네마틱", "한강에서 치킨 먹는 강아지",
        "벚꽃이 흩날리는 길을 자전거 타고 가는 소년", "우주에서 본 지구, 천천히 회전",
        "떡볶이가 보글보글 끓는 모습 클로즈업", "아이돌 무대 위에서 춤추는 로봇", "경복궁 위로 날아가는 용",
        "편의점 앞에서 라면 먹는 고양이", "겨울 바다를 바라보는 할머니"],
        mods=["시네마틱", "슬로우 모션", "노을 질 때", "애니메이션 스타일", "4K", "드론 촬영", "밤에",
              "눈 내리는", "지브리 스타일"]),
    "fr": dict(prompts=[
        "un chat qui joue de l'accordéon sur un pont à Paris",
        "la tour Eiffel sous la neige, plan drone, lumière du soir",
        "un vieux pêcheur breton qui regarde la mer, gros plan sur son visage",
        "des croissants qui sortent du four au ralenti", "une course de 2CV dans les champs de lavande en Provence",
        "un chevalier qui combat un dragon dans une forêt sombre", "une baleine qui vole au-dessus de Marseille",
        "un bébé renard qui dort dans la neige", "un escargot qui fait la course avec une voiture de F1",
        "une boulangerie la nuit, vue de la rue, lumière chaude"],
        mods=["style cinématographique", "au ralenti", "au coucher du soleil", "style dessin animé", "de nuit",
              "en 4k", "style film des années 70", "sous la pluie", "plan drone"]),
    "ru": dict(prompts=[
        "кот в валенках идёт по заснеженной деревне", "медведь играет на балалайке на Красной площади",
        "ночная Москва с высоты птичьего полёта, огни машин", "девушка в красном платье бежит по полю ромашек",
        "космонавт пьёт чай на орбитальной станции", "старый трамвай едет по осеннему Петербургу",
        "волк воет на луну в зимнем лесу", "ёжик в тумане ищет лошадку", "бабушка печёт блины на даче",
        "лось переходит дорогу в тайге"],
        mods=["в кинематографическом стиле", "замедленная съёмка", "на закате", "в стиле аниме", "ночью",
              "4к", "съёмка с дрона", "в стиле советского мультфильма", "реалистично"]),
    "es": dict(prompts=[
        "tacos al pastor girando en el trompo, primer plano",
        "una mujer caminando por las calles de Guanajuato al atardecer",
        "lucha libre entre dos robots gigantes en la Ciudad de México",
        "un ajolote nadando en un canal de Xochimilco",
        "día de muertos, calaveras bailando entre flores de cempasúchil",
        "un gato negro persiguiendo una mariposa monarca", "una llama con lentes de sol manejando un convertible",
        "abuelita haciendo tortillas a mano en una cocina de pueblo", "un barco pirata en una tormenta"],
        mods=["estilo cinematográfico", "en cámara lenta", "al atardecer", "estilo anime", "de noche",
              "4k realista", "toma de dron", "estilo pixar", "muy realista"]),
    "ja": dict(prompts=[
        "桜の木の下で昼寝する柴犬", "雨の渋谷スクランブル交差点、夜、ネオン", "侍が竹林で刀を抜く瞬間、スローモーション",
        "ラーメンの湯気、クローズアップ", "富士山の上を飛ぶ龍", "新幹線が田んぼの間を走り抜ける、ドローン撮影",
        "夏祭りの花火を見上げる浴衣の女の子", "古い商店街を歩く猫"],
        mods=["アニメ風", "スローモーション", "夕暮れ", "シネマティック", "夜", "4K", "ジブリ風", "ドローン撮影",
              "実写風"]),
}

# prompts already circulating in the community channel when the log starts:
# (text, seed or None, popularity, posted how many seconds before t=0)
INITIAL_BOARD = [
    ("a capybara relaxing in a hot spring with a yuzu on its head while snow falls around it, steam rising, cozy",
     None, 6, 5400),
    ("POV: you're a cat knocking everything off the table, fisheye, chaotic", None, 3, 9000),
    ("an astronaut riding a horse on mars, cinematic, golden hour", None, 4, 20000),
    ("Will Smith eating spaghetti", None, 3, 40000),
    ("claymation halloween night, a little ghost trick-or-treating alone and getting candy from a skeleton, "
     "stop motion, cozy", 4242, 5, 3000),
    ("a cat DJ wearing headphones at a huge festival, crowd cheering, lasers, confetti", None, 4, 7200),
    ("tiny chef cooking in a dollhouse kitchen, miniature, tilt-shift, warm light", 777, 2, 12000),
    ("hyperrealistic FPV drone shot diving off a cliff and flying through a waterfall in iceland, 4k", None, 3, 15000),
    ("a grumpy old bulldog in a cafe ordering a latte, sitcom style", None, 2, 8000),
    ("paper boat sailing through a flooded street in Tokyo at night, neon reflections, rain, lofi anime style",
     1234, 3, 4000),
    ("a whale flying over a city at sunset, people looking up in awe", None, 2, 25000),
]
FEATURED = ("a tiny dragon sleeping in a teacup on a windowsill, rain outside, cozy, soft morning light, "
            "Studio Ghibli style", 90210, 2.55 * 3600)

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
_EMOJI_RE = re.compile(r"[\U0001F000-\U0001FFFF\u2600-\u27BF\uFE0F]+")


def wchoice(rng, pairs):
    total = sum(w for _, w in pairs)
    x = rng.uniform(0, total)
    for item, w in pairs:
        x -= w
        if x <= 0:
            return item
    return pairs[-1][0]


def geom(rng, p, cap):
    n = 1
    while n < cap and rng.random() > p:
        n += 1
    return n


def lognorm(rng, median, sigma):
    return median * math.exp(rng.gauss(0, sigma))


def cap1(s):
    return s[:1].upper() + s[1:] if s else s


def strip_article(s):
    for a in ("a ", "an ", "the "):
        if s.startswith(a):
            return s[len(a):]
    return s


def find_item(text, items):
    """longest vocabulary item occurring in text as a whole phrase (word boundaries for Latin text)"""
    for it in sorted(items, key=len, reverse=True):
        left = r"(?<![A-Za-z0-9'])" if it[:1].isascii() and it[:1].isalnum() else ""
        right = r"(?![A-Za-z0-9])" if it[-1:].isascii() and it[-1:].isalnum() else ""
        m = re.search(left + re.escape(it) + right, text, flags=re.I)
        if m:
            return m.start(), m.end(), it
    return None


def split_tail(text):
    """separate trailing emoji so additions go before them"""
    m = re.search(r"(\s*(?:" + _EMOJI_RE.pattern + r")\s*)+$", text)
    if m and m.start() > 0:
        return text[:m.start()], text[m.start():]
    return text, ""


def append_phrase(text, phrase):
    body, tail = split_tail(text)
    body = body.rstrip()
    if body.endswith((".", "!", "?")):
        new = body + " " + cap1(phrase) + ("" if phrase.endswith((".", "!")) else ".")
    elif body.endswith((",", "，")):
        new = body + " " + phrase
    elif re.search(r"[\u3040-\u30ff\u4e00-\u9fff]$", body):
        new = body + ("、" if re.search(r"[\u3040-\u30ff]", body) else "，") + phrase
    else:
        new = body + ", " + phrase
    return new + tail


def replace_span(text, s, e, new):
    sentence_start = s == 0 or text[:s].rstrip().endswith((".", "!", "?", ":"))
    if sentence_start and text[s:s + 1].isupper():
        new = cap1(new)
    return text[:s] + new + text[e:]


def swap_or_add(rng, text, items, add=True):
    m = find_item(text, items)
    if m:
        s, e, it = m
        choices = [x for x in items if x.lower() != it.lower() and x.lower() not in text.lower()]
        if not choices:
            return text
        return replace_span(text, s, e, rng.choice(choices))
    if add:
        return append_phrase(text, rng.choice(items))
    return text


def inject_typo(rng, text):
    words = [m for m in re.finditer(r"[a-z]{5,}", text)]
    if not words:
        return text, None
    w = rng.choice(words)
    word = w.group(0)
    i = rng.randrange(1, len(word) - 1)
    kind = rng.random()
    if kind < 0.4:
        bad = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    elif kind < 0.75:
        bad = word[:i] + word[i + 1:]
    else:
        bad = word[:i] + word[i] + word[i:]
    if bad == word:
        return text, None
    return text[:w.start()] + bad + text[w.end():], (bad, word)


# ---------------------------------------------------------------------------
# simulation
# ---------------------------------------------------------------------------
class Sim:
    def __init__(self, scale, sub=0):
        self.rng = random.Random(SEED * 1000 + sub)
        self.scale = scale
        self.log = []
        self.board = []     # dicts: text, seed, t, pop, boost
        for text, seed, pop, ago in INITIAL_BOARD:
            self.board.append(dict(text=text, seed=seed, t=-ago, pop=pop, boost=1.0))
        ft, fs, fat = FEATURED
        self.board.append(dict(text=ft, seed=fs, t=fat, pop=3, boost=6.0))
        self.scripted_left = list(range(len(SCRIPTED)))
        self.hand_used = Counter()
        self.nonen_used = Counter()
        self.users = self.make_users()

    # ----- personas -------------------------------------------------------
    def make_users(self):
        rng = self.rng
        users = []
        tiers = [("power", POWER), ("regular", REGULAR), ("casual", CASUAL), ("oneshot", ONESHOT)]
        for tier, names in tiers:
            for name in names:
                lang, lang_p = LANG_OF.get(name, ("en", 0.0))
                if tier == "power":
                    budget = rng.randint(32, 70) * self.scale
                    nsess = rng.choice([2, 3, 3, 4])
                elif tier == "regular":
                    budget = rng.randint(9, 27) * self.scale
                    nsess = rng.choice([1, 2, 2, 3])
                elif tier == "casual":
                    budget = rng.randint(3, 8)
                    nsess = rng.choice([1, 1, 2])
                else:
                    budget = rng.choice([1, 1, 2, 2, 3])
                    nsess = 1
                budget = max(1, int(round(budget)))
                nsess = min(nsess, budget)
                interests = {c: CATS[c]["w"] * rng.choice([0.2, 0.5, 1, 1, 2, 4]) for c in CATS}
                u = dict(
                    name=name, tier=tier, budget=budget, lang=lang, lang_p=lang_p,
                    interests=list(interests.items()),
                    form=wchoice(rng, [("short", 3), ("medium", 5), ("long", 3), ("tags", 2), ("cine", 3)]),
                    lower=rng.random() < 0.35, emoji=rng.choice([0, 0, 0, 0.05, 0.15, 0.3]),
                    typo=rng.choice([0.0, 0.05, 0.1, 0.2, 0.3]),
                    prefix=rng.random() < 0.15,
                    regen=rng.choice([0.12, 0.18, 0.25, 0.3, 0.45]),
                    impatient=rng.choice([0, 0, 0.05, 0.1, 0.2]),
                    seed_p=SEED_USERS.get(name, 0.0), fav_seed=rng.choice([42, 7, 1234, 69420, 123456789,
                                                                             rng.randrange(1, 2 ** 31)]),
                    p_copy={"power": 0.1, "regular": 0.25, "casual": 0.38, "oneshot": 0.5}[tier],
                    p_post={"power": 0.1, "regular": 0.05, "casual": 0.02, "oneshot": 0.0}[tier],
                    chain_p={"power": 0.16, "regular": 0.27, "casual": 0.45, "oneshot": 0.7}[tier],
                )
                if tier == "oneshot":
                    u["regen"] = rng.choice([0.1, 0.3])
                # sessions: start times from afternoon->evening intensity curve
                seg = (T_END + 300) / nsess      # spread a user's sessions over the afternoon
                starts = [self.sample_start(-900 + i * seg, -900 + (i + 1) * seg) for i in range(nsess)]
                cuts = sorted(rng.sample(range(1, budget), nsess - 1)) if nsess > 1 else []
                sizes = [b - a for a, b in zip([0] + cuts, cuts + [budget])]
                u["sessions"] = list(zip(starts, sizes))
                users.append(u)
        return users

    def sample_start(self, lo, hi):
        rng = self.rng
        hi = min(hi, T_END - 600)
        while True:
            t = rng.uniform(lo, hi)
            h = max(t, 0) / 3600
            rate = 0.75 + 0.07 * h + 0.45 * math.exp(-((h - 4.6) / 1.2) ** 2)
            if rng.uniform(0, 1.4) < rate:
                return max(t, rng.uniform(0, 120))

    # ----- prompt creation --------------------------------------------------
    def personalize(self, u, text, lang="en"):
        rng = self.rng
        typo = None
        if lang == "en":
            if u["prefix"] and rng.random() < 0.5:
                text = rng.choice(USER_PREFIXES) + text[0].lower() + text[1:]
            if u["lower"]:
                text = text.lower()
            if rng.random() < u["typo"]:
                text, typo = inject_typo(rng, text)
        if u["emoji"] and rng.random() < u["emoji"]:
            e = rng.choice(EMOJI)
            text = text + " " + e * rng.choice([1, 1, 1, 2, 3])
        return text, typo

    def compose(self, u):
        rng = self.rng
        cat = wchoice(rng, u["interests"])
        c = CATS[cat]
        subj, act, loc = rng.choice(c["subj"]), rng.choice(c["act"]), rng.choice(c["loc"])
        style, cam, light = wchoice(rng, STYLES), rng.choice(CAMERAS), rng.choice(LIGHTING)
        det = rng.choice(DETAILS)
        form = u["form"] if rng.random() < 0.75 else rng.choice(["short", "medium", "long", "tags", "cine"])
        if form == "short":
            text = strip_article(subj) + " " + act
            if rng.random() < 0.35:
                text += " " + loc
        elif form == "medium":
            extra = rng.sample([style, light, cam, det], rng.choice([1, 1, 2, 2, 3]))
            text = ", ".join([f"{subj} {act} {loc}"] + extra)
        elif form == "tags":
            parts = [subj, act, loc] + rng.sample([style, light, cam, det], rng.randint(2, 4))
            parts += rng.sample(QUALITY, rng.randint(1, 4))
            text = ", ".join(parts)
        elif form == "cine":
            text = f"{rng.choice(SHOT_OPENERS)} {subj} {act} {loc}, {light}"
            if rng.random() < 0.6:
                text += f", {style}"
            if rng.random() < 0.3:
                text += f", {cam}"
        else:
            sents = [cap1(f"{subj} {act} {loc}.")]
            sents.append(cap1(cam) + ".")
            sents.append(cap1(f"{light}, {det}."))
            if rng.random() < 0.7:
                sents.append(cap1(style) + ".")
            if rng.random() < 0.5:
                sents.append(rng.choice(EXTRA_SENTENCES))
            if rng.random() < 0.3:
                sents.append(", ".join(rng.sample(QUALITY, 2)))
            text = " ".join(sents)
        if form != "long" and rng.random() < 0.5:
            text = cap1(text)
        return text, cat

    def pick_unused(self, pool, counter):
        rng = self.rng
        m = min(counter[p] for p in pool)
        cands = [p for p in pool if counter[p] == m]
        p = rng.choice(cands)
        counter[p] += 1
        return p, m

    def new_chain(self, u, t):
        rng = self.rng
        ch = dict(text=None, lang="en", typo=None, seed=None, locked=False, script=None, pos=0, cat=None,
                  copied=False, hist=[])
        native = u["lang"] != "en" and rng.random() < u["lang_p"]
        # copy from the community channel
        if rng.random() < u["p_copy"]:
            post = self.pick_board(t)
            if post is not None:
                post["pop"] += 1
                ch["copied"] = True
                text = post["text"]
                if rng.random() < 0.33:   # light edit before the first try
                    text = self.edit_text(u, dict(ch, text=text), rng.choice(
                        ["subject", "style", "detail", "location", "reword", "lighting"]))
                elif post["seed"] is not None and rng.random() < 0.5:
                    ch["seed"], ch["locked"] = post["seed"], True   # "remix" keeps the seed
                ch["text"] = text
                return ch
        # scripted refinement chain
        lang = u["lang"] if native else "en"
        avail = [i for i in self.scripted_left if SCRIPTED[i][0] == lang]
        if avail and rng.random() < (0.16 if lang == "en" else 0.3):
            i = rng.choice(avail)
            self.scripted_left.remove(i)
            ch["script"], ch["lang"] = SCRIPTED[i][1], lang
            ch["text"] = ch["script"][0]
            if u["lower"] and lang == "en":
                ch["script"] = [s.lower() for s in ch["script"]]
                ch["text"] = ch["script"][0]
            return ch
        if native:
            p, used = self.pick_unused(NON_EN[lang]["prompts"], self.nonen_used)
            if used and rng.random() < 0.8:
                for _ in range(rng.randint(1, 2)):
                    p = append_phrase(p, rng.choice(NON_EN[lang]["mods"]))
            ch["lang"] = lang
            ch["text"], _ = self.personalize(u, p, lang)
            return ch
        if rng.random() < 0.38:
            p, used = self.pick_unused(HANDWRITTEN, self.hand_used)
            if used and rng.random() < 0.7:
                p = append_phrase(p, wchoice(rng, STYLES))
        else:
            p, ch["cat"] = self.compose(u)
        ch["text"], ch["typo"] = self.personalize(u, p)
        if u["seed_p"] and rng.random() < u["seed_p"] * 0.25:
            ch["seed"], ch["locked"] = u["fav_seed"], True
        return ch

    def pick_board(self, t):
        rng = self.rng
        cands = [(p, (1 + p["pop"]) * p["boost"] * (0.25 + math.exp(-(t - p["t"]) / 3600)))
                 for p in self.board if p["t"] <= t]
        if not cands:
            return None
        return wchoice(rng, cands)

    # ----- refinement ----------------------------------------------------------
    def edit_text(self, u, ch, op):
        rng = self.rng
        text, lang = ch["text"], ch["lang"]
        if lang != "en":
            mods = NON_EN[lang]["mods"]
            if op == "english":
                return append_phrase(text, rng.choice([wchoice(rng, STYLES), rng.choice(QUALITY),
                                                       rng.choice(CAMERAS)]))
            if op == "remove" and find_item(text, mods):
                s, e, _ = find_item(text, mods)
                return re.sub(r"^[,，、\s]+|[,，、\s]+$", "", (text[:s] + text[e:]).replace(", ,", ","))
            return swap_or_add(rng, text, mods, add=True) if rng.random() < 0.5 else append_phrase(
                text, rng.choice([m for m in mods if m not in text] or mods))
        cat = CATS.get(ch["cat"]) if ch["cat"] else None
        allv = lambda k: sum((c[k] for c in CATS.values()), [])
        if op == "style":
            return swap_or_add(rng, text, [s for s, _ in STYLES])
        if op == "camera":
            return swap_or_add(rng, text, CAMERAS)
        if op == "lighting":
            return swap_or_add(rng, text, LIGHTING)
        if op == "detail":
            return append_phrase(text, rng.choice([d for d in DETAILS if d not in text] or DETAILS))
        if op in ("action", "location", "subject"):
            key = {"action": "act", "location": "loc", "subject": "subj"}[op]
            pool = cat[key] if cat else allv(key)
            m = find_item(text, pool) if cat else None
            if m is None:
                m = find_item(text, allv(key))
            if m:
                s, e, it = m
                for k, c in CATS.items():
                    if it in c[key]:
                        pool = c[key]
                        break
                if op == "subject" and rng.random() < 0.2:
                    pool = CATS[rng.choice(["animals", "people", "memes", "fantasy"])]["subj"]
                choices = [x for x in pool if x != it]
                return replace_span(text, s, e, rng.choice(choices))
            if op == "subject":
                for noun, repl in NOUN_SWAPS.items():
                    mm = re.search(r"\b%s\b" % noun, text, flags=re.I)
                    if mm:
                        return replace_span(text, mm.start(), mm.end(), rng.choice(repl))
                return text
            if op == "location":
                return append_phrase(text, rng.choice(allv("loc")))
            return text
        if op == "remove":
            body, tail = split_tail(text)
            parts = re.split(r"(?<=[.,])\s+", body)
            if len(parts) > 2:
                drop = rng.randrange(1, len(parts))
                new = " ".join(p for i, p in enumerate(parts) if i != drop).rstrip(",")
                return new + tail
            return text
        if op == "typo":
            if ch["typo"]:
                bad, good = ch["typo"]
                ch["typo"] = None
                return text.replace(bad, good, 1)
            op = "reword"
        if op == "reword":
            opts = [(a, b) for a, b in REWORDS if re.search(r"\b%s" % re.escape(a), text)]
            if opts:
                a, b = rng.choice(opts)
                return re.sub(r"\b%s" % re.escape(a), b, text, count=1)
            return text
        if op == "quality":
            return append_phrase(text, ", ".join(rng.sample(QUALITY + NEGATIVE, rng.choice([1, 1, 2, 3]))))
        if op == "negative":
            return append_phrase(text, rng.choice(NEGATIVE))
        if op == "elaborate":
            body, tail = split_tail(text)
            body = body.rstrip(" ,")
            if not body.endswith((".", "!", "?")):
                body += "."
            return body + " " + rng.choice(EXTRA_SENTENCES) + tail
        return text

    EDIT_OPS = [("style", 12), ("camera", 10), ("lighting", 8), ("action", 8), ("location", 8),
                ("subject", 8), ("detail", 11), ("remove", 5), ("typo", 4), ("reword", 5), ("quality", 5),
                ("negative", 3), ("elaborate", 5), ("revert", 4)]
    EDIT_OPS_NONEN = [("mod", 10), ("english", 3), ("remove", 2)]

    def choose_next(self, u, ch):
        """what the user does next in this chain: 'regen', 'seed', 'script', or an edit op"""
        rng = self.rng
        if ch["script"] is not None and ch["pos"] + 1 < len(ch["script"]):
            return "regen" if rng.random() < u["regen"] * 0.6 else "script"
        if ch["typo"] and rng.random() < 0.6:
            return "typo"
        if ch["locked"] and rng.random() < 0.3:
            return "seed"
        if rng.random() < (u["regen"] * (0.4 if ch["locked"] else 1.0)):
            return "regen"
        return wchoice(rng, self.EDIT_OPS if ch["lang"] == "en" else self.EDIT_OPS_NONEN)

    def apply(self, u, ch, op):
        rng = self.rng
        if op == "regen":
            return
        if op == "script":
            ch["pos"] += 1
            ch["text"] = ch["script"][ch["pos"]]
            return
        if op == "seed":   # same prompt, different seed (seed sweep)
            ch["seed"] = ch["seed"] + 1 if rng.random() < 0.6 else rng.randrange(1, 2 ** 31)
            return
        if op == "revert" and len(ch["hist"]) >= 3:
            # "the earlier one was better": go back to a previous version
            ch["text"] = ch["hist"][rng.randrange(0, len(ch["hist"]) - 1)]
            return
        if op in ("detail", "quality", "negative", "elaborate", "location") and len(ch["text"]) > 220 \
                and rng.random() < 0.6:
            op = "remove"   # prompt got too long: trim instead of piling on
        before = ch["text"]
        tries = 0
        while ch["text"] == before and tries < 6:
            ch["text"] = self.edit_text(u, ch, op)
            op = wchoice(rng, self.EDIT_OPS if ch["lang"] == "en" else self.EDIT_OPS_NONEN)
            tries += 1
        if len(ch["text"]) > 1200:
            ch["text"] = ch["text"][:1200].rsplit(",", 1)[0]
        # power users lock a seed once they like a composition
        if u["seed_p"] and not ch["locked"] and rng.random() < u["seed_p"] * 0.2:
            ch["seed"], ch["locked"] = rng.choice([u["fav_seed"], rng.randrange(1, 2 ** 31)]), True

    def gap(self, u, nxt):
        rng = self.rng
        render = min(max(lognorm(rng, 65, 0.3), 25), 240)
        if nxt in ("regen", "seed") and rng.random() < u["impatient"] * 2:
            return rng.uniform(2, 15)
        if rng.random() < u["impatient"]:
            return rng.uniform(3, 25)
        watch = rng.uniform(6, 25)
        if nxt in ("regen", "seed"):
            g = render + watch + rng.uniform(1, 6)
        elif nxt == "new":
            g = render + watch + lognorm(rng, 70, 0.8)
        else:
            g = render + watch + lognorm(rng, 22, 0.6)
        if rng.random() < 0.035:
            g += rng.uniform(300, 1500)   # went away for a bit
        return g

    def emit(self, t, u, ch):
        if not ch["hist"] or ch["hist"][-1] != ch["text"]:
            ch["hist"].append(ch["text"])
        rec = {"t": round(t, 2), "tenant": "public", "prompt": ch["text"], "user": u["name"]}
        if ch["seed"] is not None:
            rec["seed"] = int(ch["seed"])
        self.log.append(rec)

    def user_proc(self, u):
        rng = self.rng
        t = None
        for start, n in u["sessions"]:
            t = start if t is None else max(start, t + rng.uniform(600, 2400))
            if t >= T_END:
                return
            yield t
            k = 0
            while k < n:
                ch = self.new_chain(u, t)
                L = geom(rng, u["chain_p"], 22)
                if ch["script"] is not None:
                    L = max(L, len(ch["script"]) - rng.randint(0, 1))
                i = 0
                while True:
                    self.emit(t, u, ch)
                    k += 1
                    i += 1
                    if i >= 3 and rng.random() < u["p_post"]:
                        self.board.append(dict(text=ch["text"], seed=ch["seed"] if ch["locked"] else None,
                                               t=t + rng.uniform(60, 400), pop=0, boost=1.0))
                    if k >= n:
                        break
                    nxt = self.choose_next(u, ch) if i < L else "new"
                    t += self.gap(u, nxt)
                    if t >= T_END:
                        return
                    yield t
                    if nxt == "new":
                        break
                    self.apply(u, ch, nxt)

    def run(self):
        heap = []
        for idx, u in enumerate(self.users):
            g = self.user_proc(u)
            try:
                heapq.heappush(heap, (next(g), idx, g))
            except StopIteration:
                pass
        while heap:
            t, idx, g = heapq.heappop(heap)
            try:
                heapq.heappush(heap, (next(g), idx, g))
            except StopIteration:
                pass
        return self.log


def validate(log):
    uname = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
    prev = -1.0
    for r in log:
        assert set(r) <= {"t", "tenant", "prompt", "user", "seed"}
        assert r["t"] >= prev and r["tenant"] == "public" and uname.match(r["user"])
        assert isinstance(r["prompt"], str) and r["prompt"].strip()
        prev = r["t"]


def acceptable(log):
    if not (TARGET[0] <= len(log) <= TARGET[1]):
        return False
    hours = Counter(int(r["t"] // 3600) for r in log)
    h = [hours[i] for i in range(6)]
    return (min(h) >= 85 and max(h) <= 2.3 * min(h) and sum(h[:2]) * 1.25 < sum(h[4:])
            and h[0] < h[4] and h[1] < h[4])


def main():
    # Calibration: try sub-seeds / budget scales (deterministically) until the run has the
    # intended size and an afternoon->evening shape (every hour busy, evening busier).
    log = None
    for sub in range(500):
        scale = 0.8 + 0.02 * (sub % 15)
        log = Sim(scale, sub).run()
        if acceptable(log):
            break
    else:
        raise SystemExit("calibration failed")
    validate(log)
    with open(OUT_PATH, "w", encoding="utf-8") as f:
        for r in log:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

    users = Counter(r["user"] for r in log)
    seen, repeats, self_rep, cross_rep = {}, 0, 0, 0
    for r in log:
        p = r["prompt"]
        if p in seen:
            repeats += 1
            if r["user"] in seen[p]:
                self_rep += 1
            else:
                cross_rep += 1
            seen[p].add(r["user"])
        else:
            seen[p] = {r["user"]}
    per = sorted(users.values())
    n = len(log)
    print(f"calibration: sub-seed {sub}, budget scale {scale:.2f}")
    print(f"requests:                   {n}")
    print(f"time span (h):              {log[0]['t'] / 3600:.2f} .. {log[-1]['t'] / 3600:.2f}")
    print(f"distinct users:             {len(users)}")
    print(f"distinct prompts:           {len(seen)}")
    print(f"exact repeats:              {repeats} ({repeats / n:.1%}) "
          f"[same user {self_rep}, another user's prompt {cross_rep}]")
    print(f"requests/user min/med/max:  {per[0]} / {statistics.median(per)} / {per[-1]}")
    print(f"with seed:                  {sum('seed' in r for r in log)} ({sum('seed' in r for r in log) / n:.1%})")
    hours = Counter(int(r["t"] // 3600) for r in log)
    print("requests per hour:          " + " ".join(str(hours[h]) for h in range(6)))
    nonascii = sum(any(ord(c) > 127 and not _EMOJI_RE.match(c) for c in r["prompt"]) for r in log)
    print(f"prompts with non-ASCII text: {nonascii}")


if __name__ == "__main__":
    main()
