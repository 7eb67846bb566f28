"""Prompts in other languages for the open-vocabulary workload, written natively (not word-swapped English).

Each language has its own subjects, actions, settings and modifiers, phrased
the way a native user would type them, and a word order of its own
(`LANGUAGES[code].order`): subject, action, setting (Spanish: "un gato
naranja durmiendo en una playa"); subject, setting, action (Chinese:
"一只橘猫在樱花树下睡觉"); setting, subject, action (Japanese:
"雨の新宿で柴犬が走っている"). Subjects carry what their language
needs to attach them (Korean particles, German nominative case), settings
their preposition or postposition, so any subject combines with any action
and setting.
"""

from __future__ import annotations

from dataclasses import dataclass

SUBJECT_ACTION_SETTING = ("subject", "action", "setting")
SUBJECT_SETTING_ACTION = ("subject", "setting", "action")
SETTING_SUBJECT_ACTION = ("setting", "subject", "action")


@dataclass(frozen=True)
class LanguageVocabulary:
    """One language's lists; `join` separates modifiers, `prefixes` are ways to ask ("" = none)."""

    subjects: tuple[str, ...]
    actions: tuple[str, ...]
    settings: tuple[str, ...]
    cameras: tuple[str, ...]
    lightings: tuple[str, ...]
    styles: tuple[str, ...]
    quality: tuple[str, ...]
    order: tuple[str, str, str]  # the order of "subject", "action" and "setting"
    join: str
    prefixes: tuple[str, ...] = ("",)
    space: str = " "  # between subject, action and setting ("" where the language writes none)


ZH = LanguageVocabulary(
    subjects=("一只橘猫", "一只柴犬", "一只大熊猫", "一个小女孩", "一位老爷爷", "一个穿汉服的女孩", "一位宇航员",
              "一条金色的中国龙", "一只白色的小兔子", "一只狐狸", "一个小机器人", "一位白衣剑客", "一只哈士奇",
              "一群锦鲤", "一只小企鹅", "一个穿校服的男生", "一位老渔夫", "一匹白马", "一只仙鹤", "一个赛博朋克少女",
              "一只金毛", "一位厨师", "一只小老虎", "一个外卖小哥", "一位舞者", "一只蝴蝶", "一只布偶猫", "孙悟空",
              "一个穿旗袍的女人", "一只熊猫宝宝", "一只海豚", "一位武士", "一只猫头鹰", "一对情侣", "一个小男孩",
              "一位老奶奶", "一只松鼠", "一头鲸鱼", "一只凤凰", "一个雪人"),
    actions=("慢慢走过", "奔跑", "跳舞", "睡觉", "回头看向镜头", "吃面条", "弹吉他", "打哈欠", "飞翔", "游泳",
             "舞剑", "喝茶", "看书", "放风筝", "打太极", "追蝴蝶", "玩雪", "微笑着挥手", "骑自行车", "吹蜡烛",
             "抬头看星空", "做鬼脸", "伸懒腰", "跳进水里", "撑着伞慢慢走", "弹古筝", "吃火锅", "翻跟头", "唱歌",
             "哭泣", "大笑", "发呆", "拍照", "喂鸽子", "滑滑板"),
    settings=("在下雨的东京街头", "在樱花树下", "在竹林里", "在雪山顶上", "在夜晚的上海外滩", "在海边的夕阳下",
              "在古镇的石板路上", "在赛博朋克城市中", "在故宫的红墙前", "在星空下的草原上", "在咖啡馆的窗边",
              "在月球表面", "在西湖边", "在长城上", "在霓虹灯下的小巷里", "在金色的麦田里", "在雾气弥漫的山谷中",
              "在深海里", "在厨房里", "在图书馆里", "在地铁站里", "在桂林的山水间", "在沙漠里", "在秋天的森林里",
              "在屋顶上", "在夜市里", "在太空站里", "在花海中", "在雪地里", "在云海之上", "在重庆的夜景前",
              "在教室里", "在荷花池边", "在江南水乡的小船上"),
    cameras=("特写镜头", "航拍镜头", "慢镜头", "延时摄影", "跟拍", "广角镜头", "环绕镜头", "镜头缓缓推进",
             "第一人称视角", "俯拍", "一镜到底"),
    lightings=("黄金时刻", "夕阳逆光", "霓虹灯光", "柔和的晨光", "月光", "丁达尔效应", "暖色调灯光", "雨夜的灯光",
               "电影级光影", "烛光"),
    styles=("电影感", "水墨画风格", "宫崎骏风格", "皮克斯风格", "赛博朋克风格", "国风", "动漫风格", "写实风格",
            "油画风格", "胶片质感", "3D动画", "黏土动画", "像素风", "新海诚风格", "复古港风", "武侠电影风格"),
    quality=("4K", "8K", "高清", "超高清", "细节丰富", "大师级作品", "画面唯美"),
    order=SUBJECT_SETTING_ACTION, join="，", prefixes=("", "", "生成一段视频：", "帮我生成：", "视频："), space="",
)

JA = LanguageVocabulary(
    subjects=("柴犬が", "三毛猫が", "黒猫が", "女子高生が", "着物姿の女性が", "宇宙飛行士が", "侍が", "忍者が",
              "小さなロボットが", "白いキツネが", "おじいさんが", "子どもたちが", "巫女が", "パンダが", "ペンギンが",
              "ドラゴンが", "金魚が", "魔法少女が", "猫耳の少女が", "サラリーマンが", "鹿が", "カワウソが", "フクロウが",
              "少年が", "アイドルが", "ラーメン屋の店主が", "幽霊が", "雪だるまが", "秋田犬が", "おばあちゃんが"),
    actions=("走っている", "踊っている", "眠っている", "振り返ってカメラを見る", "ラーメンを食べている",
             "傘をさして歩いている", "ギターを弾いている", "空を飛んでいる", "泳いでいる", "刀を抜く",
             "あくびをしている", "笑いながら手を振っている", "自転車をこいでいる", "星空を見上げている",
             "はしゃいでいる", "お茶を飲んでいる", "本を読んでいる", "花火を見ている", "ジャンプしている",
             "ゆっくり歩いている", "泣いている", "歌っている", "スケボーに乗っている", "たこ焼きを焼いている"),
    settings=("雨の新宿で", "桜並木の下で", "夕暮れの海辺で", "京都の古い路地で", "雪の降る神社で",
              "渋谷のスクランブル交差点で", "竹林の中で", "富士山のふもとで", "夏祭りの夜店で", "田舎の駅のホームで",
              "放課後の教室で", "満月の夜の屋根の上で", "ネオン街で", "紅葉の森で", "深海で", "月面で",
              "昭和の喫茶店で", "花火大会の河川敷で", "秋葉原の電気街で", "露天風呂で", "図書館で", "夜の遊園地で",
              "朝焼けの田んぼで", "雲の上で", "コンビニの前で", "大阪の道頓堀で"),
    cameras=("スローモーション", "クローズアップ", "ドローン空撮", "タイムラプス", "手持ちカメラ", "広角レンズ",
             "カメラがゆっくり近づく", "長回し", "俯瞰ショット"),
    lightings=("夕焼け", "逆光", "ネオンの光", "柔らかい朝の光", "月明かり", "木漏れ日", "提灯の明かり", "マジックアワー"),
    styles=("アニメ風", "ジブリ風", "新海誠風", "実写風", "シネマティック", "水彩画風", "浮世絵風", "90年代アニメ風",
            "ピクサー風", "ドット絵", "ストップモーション", "フィルム写真風", "映画のワンシーン", "特撮風"),
    quality=("4K", "高画質", "高精細", "美しい映像", "最高品質"),
    order=SETTING_SUBJECT_ACTION, join="、", prefixes=("", "", "動画：", "プロンプト："), space="",
)

KO = LanguageVocabulary(
    subjects=("고양이가", "강아지가", "시바견이", "우주비행사가", "한복을 입은 여자가", "교복을 입은 학생이",
              "작은 로봇이", "할머니가", "아이돌이", "호랑이가", "판다가", "펭귄이", "여우가", "용이", "고등학생 커플이",
              "댄서가", "요리사가", "기사가", "고래가", "햄스터가", "소년이", "소녀가", "곰이", "토끼가", "부엉이가",
              "나비가", "마법사가", "인어가", "흰 말이", "진돗개가"),
    actions=("천천히 걷고 있다", "춤을 추고 있다", "뛰어가고 있다", "잠을 자고 있다", "카메라를 향해 손을 흔든다",
             "라면을 먹고 있다", "기타를 치고 있다", "하늘을 날고 있다", "헤엄치고 있다", "하품을 한다", "뒤를 돌아본다",
             "우산을 쓰고 걷고 있다", "자전거를 타고 있다", "별을 올려다본다", "책을 읽고 있다", "커피를 마시고 있다",
             "눈싸움을 하고 있다", "노래를 부르고 있다", "점프한다", "웃고 있다", "떡볶이를 먹고 있다", "울고 있다"),
    settings=("비 오는 서울 거리에서", "벚꽃길에서", "한강 공원에서", "해 질 녘 바닷가에서", "눈 덮인 숲에서",
              "네온사인이 가득한 골목에서", "경복궁 앞에서", "제주도 해변에서", "지하철역에서", "카페 창가에서",
              "우주 정거장에서", "달 표면에서", "가을 단풍 숲에서", "옥상에서", "밤의 놀이공원에서", "도서관에서",
              "편의점 앞에서", "사막에서", "깊은 바닷속에서", "한옥 마을에서", "구름 위에서", "광안대교 앞에서",
              "눈 내리는 시골 마을에서", "포장마차에서"),
    cameras=("슬로우 모션", "클로즈업", "드론 촬영", "타임랩스", "핸드헬드 카메라", "광각 렌즈",
             "카메라가 천천히 다가간다", "롱테이크"),
    lightings=("노을빛", "역광", "네온 조명", "부드러운 아침 햇살", "달빛", "골든아워", "따뜻한 조명"),
    styles=("시네마틱", "애니메이션 스타일", "지브리 스타일", "실사 느낌", "수채화 스타일", "픽사 스타일",
            "웹툰 스타일", "필름 카메라 느낌", "뮤직비디오 느낌", "3D 애니메이션", "K-드라마 느낌"),
    quality=("4K", "고화질", "8K", "디테일한", "초고화질"),
    order=SETTING_SUBJECT_ACTION, join=", ", prefixes=("", "", "영상: ", "프롬프트: "),
)

ES = LanguageVocabulary(
    subjects=("un gato naranja", "un perro salchicha", "un golden retriever", "una niña con un paraguas rojo",
              "un astronauta", "un viejo pescador", "una bailarina de flamenco", "un caballo blanco", "un dragón",
              "un zorro", "un robot pequeño", "un mariachi", "un ajolote", "una tortuga marina", "un colibrí",
              "un jaguar", "una abuela", "un niño con una cometa", "un surfista", "un guerrero azteca",
              "una mujer con un vestido blanco", "un futbolista", "un pulpo", "un búho", "un oso panda", "un chef",
              "una pareja de ancianos", "un motociclista", "una llama", "un toro", "un perrito callejero"),
    actions=("corriendo", "bailando", "durmiendo", "nadando", "volando", "saltando", "mirando a la cámara",
             "tocando la guitarra", "comiendo tacos", "jugando con una pelota", "girando lentamente",
             "saludando con la mano", "paseando tranquilamente", "leyendo un libro", "cocinando", "riéndose",
             "surfeando una ola enorme", "montando en bicicleta", "bostezando", "llorando", "cantando",
             "caminando bajo la lluvia", "tomando un café", "bailando salsa"),
    settings=("en una playa al atardecer", "en las calles de Madrid", "en un mercado de la Ciudad de México",
              "en un bosque con niebla", "en la cima de una montaña nevada", "en una cocina antigua",
              "en un callejón con luces de neón", "en el desierto de Atacama", "en Marte", "bajo el agua",
              "en un campo de girasoles", "en una plaza de Sevilla", "en la selva", "en una azotea de noche",
              "en un pueblo blanco de Andalucía", "en el metro de Buenos Aires", "en una biblioteca antigua",
              "en la Patagonia", "en una fiesta del Día de Muertos", "en un lago congelado", "sobre las nubes",
              "en una cafetería junto a la ventana", "en las calles de Bogotá", "en una cancha de fútbol"),
    cameras=("cámara lenta", "primer plano", "plano aéreo con dron", "cámara en mano", "plano general", "travelling",
             "timelapse", "gran angular", "la cámara se acerca lentamente"),
    lightings=("luz dorada", "contraluz", "luces de neón", "luz suave de la mañana", "luz de luna", "hora dorada",
               "iluminación dramática"),
    styles=("estilo cinematográfico", "estilo anime", "estilo Pixar", "acuarela", "estilo realista", "pintura al óleo",
            "estilo Ghibli", "película de los 80", "animación en plastilina", "estilo documental",
            "estilo videoclip", "estilo telenovela"),
    quality=("4k", "alta calidad", "muy detallado", "8k", "ultra realista"),
    order=SUBJECT_ACTION_SETTING, join=", ", prefixes=("", "", "video de ", "haz un video de ", "quiero un video de "),
)

PT = LanguageVocabulary(
    subjects=("um gato laranja", "um cachorro caramelo", "uma capivara", "um astronauta",
              "uma menina com um guarda-chuva amarelo", "um velho pescador", "um surfista", "uma arara azul",
              "um tucano", "um dragão", "uma raposa", "um robô pequeno", "um jogador de futebol", "uma bailarina",
              "um bicho-preguiça", "uma onça-pintada", "uma senhora idosa", "um boto-cor-de-rosa", "um menino",
              "um cavalo branco", "uma tartaruga marinha", "um chef", "um mico-leão-dourado", "um casal de idosos",
              "um motoboy", "uma vovó", "um papagaio"),
    actions=("correndo", "dançando", "dormindo", "nadando", "voando", "pulando", "olhando para a câmera",
             "tocando violão", "comendo pastel", "brincando com uma bola", "acenando", "caminhando devagar",
             "surfando uma onda gigante", "andando de bicicleta", "bocejando", "rindo", "sambando", "soltando pipa",
             "tomando café", "lendo um livro", "chorando", "cantando"),
    settings=("numa praia ao pôr do sol", "nas ruas do Rio de Janeiro", "na Avenida Paulista à noite",
              "numa favela colorida", "na floresta amazônica", "nas ruas de Lisboa", "dentro de um bonde antigo",
              "no Pelourinho", "numa cozinha de vó", "num campo de várzea", "em Marte", "debaixo d'água",
              "num campo de girassóis", "no topo de uma montanha com neblina", "num beco com luzes neon",
              "nos Lençóis Maranhenses", "numa feira de rua", "no meio do carnaval", "numa biblioteca antiga",
              "em cima das nuvens", "numa padaria de bairro", "no Pantanal"),
    cameras=("câmera lenta", "close-up", "filmagem aérea com drone", "câmera na mão", "plano aberto", "timelapse",
             "grande angular", "a câmera se aproxima devagar"),
    lightings=("luz dourada", "contraluz", "luzes neon", "luz suave da manhã", "luar", "golden hour",
               "iluminação dramática"),
    styles=("estilo cinematográfico", "estilo anime", "estilo Pixar", "aquarela", "realista", "pintura a óleo",
            "estilo Ghibli", "filme dos anos 80", "animação em massinha", "estilo documentário", "estilo novela"),
    quality=("4k", "alta qualidade", "bem detalhado", "8k", "ultra realista"),
    order=SUBJECT_ACTION_SETTING, join=", ", prefixes=("", "", "vídeo de ", "faz um vídeo de ", "quero um vídeo de "),
)

FR = LanguageVocabulary(
    subjects=("un chat roux", "un petit chien", "un renard", "une vieille dame", "un astronaute", "un chevalier",
              "une danseuse", "un boulanger", "un cheval blanc", "un dragon", "un petit robot",
              "une petite fille en ciré jaune", "un vieux pêcheur", "un hibou", "un escargot", "un ours polaire",
              "une baleine", "un mime", "un musicien de rue", "une sorcière", "un cycliste", "un papillon",
              "une licorne", "un bouledogue français", "un pingouin", "un garçon avec un ballon rouge"),
    actions=("qui danse", "qui court", "qui dort", "en train de lire un livre", "qui regarde la caméra",
             "qui joue de l'accordéon", "qui vole", "qui nage", "qui saute", "en train de manger un croissant",
             "qui marche lentement", "qui se retourne", "qui fait du vélo", "qui boit un café", "qui chante",
             "qui rit", "qui fait du skate", "qui bâille", "qui fait signe de la main",
             "qui surfe sur une vague géante", "qui pleure", "en train de peindre"),
    settings=("dans les rues de Paris sous la pluie", "sur les toits de Paris au coucher du soleil",
              "dans une forêt brumeuse", "au sommet d'une montagne enneigée", "sur une plage de Bretagne",
              "dans un café parisien", "dans un champ de lavande en Provence", "au bord de la Seine la nuit",
              "dans une ville cyberpunk", "sur la Lune", "au fond de l'océan", "dans une vieille bibliothèque",
              "dans un château médiéval", "dans le métro parisien", "dans un marché de Noël",
              "dans un village des Alpes", "dans une cuisine à l'ancienne", "dans le désert", "au-dessus des nuages",
              "devant la tour Eiffel", "dans les rues de Montréal", "sur le Vieux-Port de Marseille"),
    cameras=("ralenti", "gros plan", "plan aérien au drone", "caméra à l'épaule", "plan large", "travelling avant",
             "timelapse", "plan-séquence", "la caméra s'approche lentement"),
    lightings=("lumière dorée", "contre-jour", "néons", "douce lumière du matin", "clair de lune", "heure dorée",
               "éclairage dramatique"),
    styles=("style cinématographique", "style anime", "style Pixar", "aquarelle", "réaliste", "peinture à l'huile",
            "style Ghibli", "film des années 80", "pâte à modeler", "style documentaire", "style bande dessinée",
            "style Wes Anderson"),
    quality=("4k", "haute qualité", "très détaillé", "8k", "ultra réaliste"),
    order=SUBJECT_ACTION_SETTING, join=", ", prefixes=("", "", "vidéo : ", "fais une vidéo : ", "prompt : "),
)

DE = LanguageVocabulary(
    subjects=("Ein roter Fuchs", "Eine orange Katze", "Ein kleiner Hund", "Ein alter Fischer", "Eine Astronautin",
              "Ein Ritter in Rüstung", "Eine Tänzerin", "Ein weißes Pferd", "Ein Drache", "Ein kleiner Roboter",
              "Ein Mädchen mit gelbem Regenmantel", "Ein Dackel", "Ein Eichhörnchen", "Ein Igel", "Ein Bäcker",
              "Eine alte Frau", "Ein Wolf", "Ein Eisbär", "Ein Wal", "Ein Straßenmusiker", "Eine Eule",
              "Ein Skateboarder", "Ein Koch", "Ein Elch", "Ein Schneemann", "Ein Junge mit Drachen"),
    actions=("läuft", "tanzt", "schläft", "schaut in die Kamera", "spielt Gitarre", "fliegt", "schwimmt", "springt",
             "isst eine Brezel", "dreht sich langsam um", "winkt in die Kamera", "fährt Fahrrad", "liest ein Buch",
             "trinkt Kaffee", "singt", "lacht", "gähnt", "spaziert langsam", "fährt Skateboard", "weint",
             "rennt auf die Kamera zu"),
    settings=("im verschneiten Wald", "in den Straßen von Berlin bei Nacht", "auf einem Weihnachtsmarkt",
              "am Strand bei Sonnenuntergang", "in den Alpen", "in einer alten Bibliothek", "in einer Neonstadt",
              "auf dem Mond", "unter Wasser", "in einem Sonnenblumenfeld", "auf einem Dach im Regen",
              "in einer gemütlichen Küche", "auf einer Burg am Rhein", "im Nebel am See", "in der U-Bahn",
              "in der Wüste", "über den Wolken", "in einem Biergarten", "vor dem Brandenburger Tor", "im Schwarzwald",
              "in der Hamburger Speicherstadt", "in Wien bei Nacht"),
    cameras=("Zeitlupe", "Nahaufnahme", "Drohnenaufnahme", "Handkamera", "Weitwinkel", "Zeitraffer", "Kamerafahrt",
             "die Kamera fährt langsam heran"),
    lightings=("goldenes Licht", "Gegenlicht", "Neonlicht", "weiches Morgenlicht", "Mondlicht", "goldene Stunde",
               "dramatische Beleuchtung"),
    styles=("cinematisch", "Anime-Stil", "Pixar-Stil", "Aquarell", "realistisch", "Ölgemälde", "Ghibli-Stil",
            "80er-Jahre-Film", "Knetanimation", "Dokumentarstil", "Wes-Anderson-Stil"),
    quality=("4K", "hohe Qualität", "sehr detailliert", "8K", "ultrarealistisch"),
    order=SUBJECT_ACTION_SETTING, join=", ", prefixes=("", "", "Video: ", "Erstelle ein Video: "),
)

LANGUAGES = {"zh": ZH, "ja": JA, "ko": KO, "es": ES, "pt": PT, "fr": FR, "de": DE}
